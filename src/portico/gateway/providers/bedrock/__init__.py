"""AWS Bedrock's Converse API (``POST /model/{modelId}/converse`` and ``/converse-stream``), signed with SigV4.

Signing uses botocore's ``SigV4Auth`` (the AWS SDK's own signer) over the exact body bytes the transport sends.
Credentials and the signer are built once per deployment, at start-up (or on its first request); botocore refreshes
temporary credentials (assumed roles, SSO, instance roles) itself, so each request signs with current ones.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.session import Session
from yarl import URL

from portico.config.schema import BedrockDeployment, HttpDeployment, secret
from portico.gateway.providers.base import UpstreamRequest, error_text
from portico.gateway.providers.bedrock.stream import BedrockStream
from portico.gateway.providers.bedrock.translate import chat_body, chat_completion
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.embeddings import EmbeddingRequest
from portico.protocol.errors import InvalidRequest, UpstreamError

__all__ = ["BedrockProvider", "BedrockStream"]

SIGNING_NAME = "bedrock"  # the service name Bedrock Runtime signs with (not "bedrock-runtime")


def _bedrock(dep: HttpDeployment) -> BedrockDeployment:
    if not isinstance(dep, BedrockDeployment):
        raise TypeError(f"the bedrock provider needs a BedrockDeployment, got {type(dep).__name__}")
    return dep


def credentials(dep: BedrockDeployment) -> Credentials:
    """The deployment's explicit keys, else the AWS chain: environment, shared config/credentials files (with
    ``aws_profile``), SSO, container and instance roles."""
    key_id = secret(dep.aws_access_key_id)
    if key_id:
        return Credentials(key_id, secret(dep.aws_secret_access_key), secret(dep.aws_session_token))
    found = Session(profile=dep.aws_profile).get_credentials()
    if found is None:
        raise UpstreamError(
            f"{dep.label}: no AWS credentials: set aws_access_key_id/aws_secret_access_key, AWS_* variables, "
            "a profile in ~/.aws, or an instance role",
            status=502, retryable=False, code="upstream_auth",
        )  # fmt: skip
    return found


class BedrockProvider:
    name = "bedrock"
    supports_n = False  # one answer per call: the gateway fans out for n > 1
    native_dimensions = False

    def __init__(self) -> None:
        self._signers: dict[int, SigV4Auth] = {}  # by deployment (a provider instance serves one)

    def prepare(self, dep: HttpDeployment) -> None:
        """At start-up, in a worker thread: resolve the credentials once (the chain may call the network)."""
        key = secret(dep.api_key)
        if not key:
            self._signer(_bedrock(dep))

    def _signer(self, dep: BedrockDeployment) -> SigV4Auth:
        signer = self._signers.get(id(dep))
        if signer is None:
            signer = self._signers[id(dep)] = SigV4Auth(credentials(dep), SIGNING_NAME, dep.region)
        return signer

    def _request(self, dep: BedrockDeployment, action: str, body: dict[str, Any]) -> UpstreamRequest:
        # The model id goes into the path percent-encoded (ids hold ':' and ARNs '/'), and is sent as encoded:
        # SigV4 signs the path, so the bytes on the wire must be the bytes signed.
        url = f"{dep.base_url.rstrip('/')}/model/{quote(dep.model or '', safe='')}/{action}"
        data = orjson.dumps(body)
        headers = {"content-type": "application/json", "accept": "application/json"}
        key = secret(dep.api_key)
        if key:
            headers["authorization"] = f"Bearer {key}"  # a Bedrock API key: no signature
        else:
            signed = AWSRequest(method="POST", url=url, data=data, headers=headers)
            self._signer(dep).add_auth(signed)
            headers = dict(signed.headers.items())
        headers.update(dep.headers)
        return UpstreamRequest(URL(url, encoded=True), headers, body, data=data)

    def chat_request(self, req: ChatCompletionRequest, dep: HttpDeployment, *, stream: bool) -> UpstreamRequest:
        return self._request(_bedrock(dep), "converse-stream" if stream else "converse", chat_body(req))

    def chat_response(self, data: dict[str, Any], req: ChatCompletionRequest, dep: HttpDeployment) -> dict[str, Any]:
        return chat_completion(data, dep.model or req.model)

    def stream_translator(self, req: ChatCompletionRequest, dep: HttpDeployment) -> BedrockStream:
        return BedrockStream(dep.model or req.model)

    def error_message(self, status: int, body: bytes) -> str:
        return error_text(body)

    def embeddings_request(self, req: EmbeddingRequest, dep: HttpDeployment) -> UpstreamRequest:
        raise InvalidRequest("the Bedrock provider serves chat (Converse) only", param="model")

    def embeddings_response(self, data: dict[str, Any], req: EmbeddingRequest, dep: HttpDeployment) -> dict[str, Any]:
        raise InvalidRequest("the Bedrock provider serves chat (Converse) only", param="model")
