"""An upstream's words never carry the deployment's credentials back (gateway.transport.scrub): a 401 that repeats
the key, an aiohttp error that shows a URL with ``?key=`` (Gemini), a custom auth header, AWS secrets."""

from __future__ import annotations

import aiohttp
from yarl import URL

from portico.config.schema import BedrockDeployment, GeminiDeployment, OpenAIDeployment
from portico.gateway.transport import _connection_error, scrub


def test_the_api_key_and_auth_headers_are_replaced() -> None:
    dep = OpenAIDeployment(provider="openai", model="m", api_key="sk-live-0123456789abcdef",
                           headers={"x-tenant-token": "tt-9876543210", "accept": "json"})  # fmt: skip
    said = "Incorrect API key provided: sk-live-0123456789abcdef (tenant tt-9876543210, accept json)."
    assert scrub(said, dep) == "Incorrect API key provided: [redacted] (tenant [redacted], accept json)."


def test_a_gemini_key_in_an_error_url_is_replaced() -> None:
    dep = GeminiDeployment(provider="gemini", model="gemini-2.0-flash", api_key="AIzaSyD-canary-1234567890")
    info = aiohttp.RequestInfo(
        URL("https://generativelanguage.googleapis.com/v1beta/models/x:generateContent?key=AIzaSyD-canary-1234567890"),
        "POST",
        {},
    )  # type: ignore[arg-type]
    e = aiohttp.ClientResponseError(info, (), status=500, message="boom")
    assert "AIzaSyD-canary" in str(e)  # what aiohttp would have put in the message
    assert "AIzaSyD-canary" not in _connection_error(dep, e).message


def test_aws_secrets_are_replaced() -> None:
    dep = BedrockDeployment(provider="bedrock", model="m", region="us-east-1", aws_access_key_id="AKIACANARY0000000000",
                            aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYcanary")  # fmt: skip
    out = scrub("signature for AKIACANARY0000000000 / wJalrXUtnFEMI/K7MDENG/bPxRfiCYcanary mismatch", dep)
    assert "AKIACANARY" not in out and "wJalrXUtnFEMI" not in out
