"""The exact cache's key: a hash of the request's canonical form and its scope.

Everything that changes the answer is in the key (model, messages, tools, sampling and format parameters);
everything that does not is out (``stream``, ``stream_options``, ``user``, ``metadata``, Portico's own extension),
so a streamed and a plain request share an entry. Key order inside objects does not matter (sorted keys).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from portico.protocol.chat import ChatCompletionRequest

# Fields that never change the answer. ``n`` stays in: two answers are not one.
IGNORED = frozenset({"stream", "stream_options", "user", "metadata", "portico"})
# Where a ``pii`` step keeps a request's placeholder → original value map (guardrails.pii.step.MAPPING).
PII_MAPPING = "pii.mapping"


def pii_scope(state: dict[str, Any]) -> str:
    """A masked request's original values, hashed, for the scope. The cached answer is stored after the pii step
    put the values back, so two requests that mask to the same text (another person's e-mail → the same
    ``[EMAIL_ADDRESS_1]``) must not share an entry: each would be served the other's values."""
    mapping = state.get(PII_MAPPING)
    if not mapping:
        return ""
    return "\x1fpii:" + hashlib.sha256(orjson.dumps(sorted(mapping.items()))).hexdigest()


def canonical(req: ChatCompletionRequest, model: str) -> bytes:
    body = req.model_dump(exclude=IGNORED, exclude_none=True, by_alias=True)
    body["model"] = model  # the resolved target (an application may route elsewhere than the name asked for)
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def cache_key(req: ChatCompletionRequest, model: str, scope: str, namespace: str = "") -> str:
    h = hashlib.blake2b(digest_size=20)
    # The scope and namespace come first and are length-prefixed: no request body can forge another scope.
    for part in (scope.encode(), namespace.encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    h.update(canonical(req, model))
    return h.hexdigest()
