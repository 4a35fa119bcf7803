"""OpenAI chat/embeddings ⇄ Gemini bodies (Google AI and Vertex AI share the ``generateContent`` format).

Request side: messages → ``contents`` + ``systemInstruction``, tools → ``functionDeclarations`` with the JSON
schema cut down to the OpenAPI subset Gemini accepts, sampling options → ``generationConfig``.
Response side: candidates → choices and ``usageMetadata`` → usage, with the per-candidate helpers of ``stream.py``.
"""

from __future__ import annotations

import mimetypes
import re
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson

from portico.gateway.providers.gemini.stream import (
    candidate_parts,
    finish_reason,
    is_blocked,
    logprobs,
    raise_if_error,
    usage_of,
)
from portico.protocol.chat import (
    ChatCompletionRequest,
    ImagePart,
    Message,
    TextPart,
    choice_dict,
    completion_dict,
)
from portico.protocol.embeddings import EmbeddingRequest, embedding_response
from portico.protocol.errors import InvalidRequest, UpstreamError

# Fields of Gemini's ``Schema`` object; anything else (additionalProperties, $schema, strict, …) is a 400 there.
_SCHEMA_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum",
})  # fmt: skip
# Gemini rejects other string formats ("uri", "email", …) instead of ignoring them.
_STRING_FORMATS = frozenset({"enum", "date-time"})
_SKIP_SIGNATURE = "skip_thought_signature_validator"
_TOOL_MODES = MappingProxyType({"auto": "AUTO", "none": "NONE", "required": "ANY"})


# ---- JSON schema → Gemini Schema -----------------------------------------------------------------------


def clean_schema(schema: dict[str, Any], param: str) -> dict[str, Any]:
    """The schema with local ``$ref``s inlined and only the keys Gemini's ``Schema`` accepts, recursively."""
    return _clean(schema, schema.get("$defs") or schema.get("definitions") or {}, param, ())


def _clean(node: Any, defs: dict[str, Any], param: str, seen: tuple[str, ...]) -> Any:
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in seen or name not in defs:
            # Gemini's Schema has no references: recursive or external ones cannot be inlined.
            raise InvalidRequest(f"cannot express JSON schema reference {ref!r} for Gemini", param=param)
        return _clean({**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}, defs, param, (*seen, name))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _clean(sub, defs, param, seen) for name, sub in value.items()}
        elif key == "items":
            out[key] = _clean(value, defs, param, seen)
        elif key in ("anyOf", "oneOf") and isinstance(value, list):
            # Gemini has no oneOf; anyOf is the closest it can express.
            out["anyOf"] = [_clean(sub, defs, param, seen) for sub in value]
        elif key == "const":
            out["enum"] = [value]
        elif key in _SCHEMA_KEYS:
            out[key] = value
    _fix_type(out)
    return out


def _fix_type(out: dict[str, Any]) -> None:
    """``type: ["string", "null"]`` (OpenAI strict mode's optional field) → ``type: string, nullable: true``."""
    types = out.get("type")
    if isinstance(types, list):
        concrete = [t for t in types if t != "null"]
        if len(types) != len(concrete):
            out["nullable"] = True
        if len(concrete) == 1:
            out["type"] = concrete[0]
        else:
            del out["type"]
            out["anyOf"] = [{"type": t} for t in concrete]
    if out.get("format") and str(out.get("type", "")).lower() == "string" and out["format"] not in _STRING_FORMATS:
        del out["format"]


# ---- chat request ----------------------------------------------------------------------------------------


def chat_body(req: ChatCompletionRequest, model: str) -> dict[str, Any]:
    system, contents = _contents(req.messages, _needs_signatures(model))
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t.function, i) for i, t in enumerate(req.tools)]}]
        if req.tool_choice is not None:
            body["toolConfig"] = {"functionCallingConfig": _tool_choice(req.tool_choice)}
    config = _generation_config(req)
    if config:
        body["generationConfig"] = config
    return body


def _needs_signatures(model: str) -> bool:
    """Gemini 3+ rejects replayed function calls without the ``thoughtSignature`` it issued (OpenAI has no field
    to carry it back), so those models get Google's documented skip sentinel instead."""
    match = re.match(r"gemini-(\d+)", model)
    return bool(match) and int(match.group(1)) >= 3


def _contents(messages: list[Message], sign: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents). Same-role turns are merged because Gemini wants them alternating."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool_call_id → function name, for functionResponse
    for i, msg in enumerate(messages):
        if msg.role in ("system", "developer"):
            system.extend(_system_parts(msg, i))
            continue
        role, parts = _turn(msg, i, call_names, sign)
        if not parts:
            continue  # Gemini rejects a turn without parts; an empty message carries nothing anyway
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    if not contents:
        raise InvalidRequest("Gemini needs at least one non-system message with content", param="messages")
    return system, contents


def _system_parts(msg: Message, i: int) -> list[dict[str, Any]]:
    if isinstance(msg.content, list) and any(not isinstance(p, TextPart) for p in msg.content):
        raise InvalidRequest("Gemini system instructions take text only", param=f"messages[{i}].content")
    text = msg.text()
    return [{"text": text}] if text else []


def _turn(msg: Message, i: int, call_names: dict[str, str], sign: bool) -> tuple[str, list[dict[str, Any]]]:
    if msg.role == "user":
        return "user", _content_parts(msg, i)
    if msg.role == "assistant":
        parts = _content_parts(msg, i)
        for j, call in enumerate(msg.tool_calls or []):
            call_names[call.id] = call.function.name
            args = _parse_args(call.function.arguments, f"messages[{i}].tool_calls[{j}].function.arguments")
            part: dict[str, Any] = {"functionCall": {"name": call.function.name, "args": args}}
            if sign and j == 0:  # only the first of parallel calls carries a signature
                part["thoughtSignature"] = _SKIP_SIGNATURE
            parts.append(part)
        return "model", parts
    if msg.role == "tool":
        name = call_names.get(msg.tool_call_id or "")
        if name is None:
            raise InvalidRequest(
                f"tool_call_id {msg.tool_call_id!r} matches no earlier assistant tool call",
                param=f"messages[{i}].tool_call_id",
            )
        return "user", [_function_response(name, msg.text())]
    # Legacy role "function": the function's name is on the message itself.
    if not msg.name:
        raise InvalidRequest("a message with role 'function' needs 'name'", param=f"messages[{i}].name")
    return "user", [_function_response(msg.name, msg.text())]


def _content_parts(msg: Message, i: int) -> list[dict[str, Any]]:
    if msg.content is None or isinstance(msg.content, str):
        return [{"text": msg.content}] if msg.content else []
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(msg.content):
        where = f"messages[{i}].content[{j}]"
        if isinstance(part, TextPart):
            if part.text:
                parts.append({"text": part.text})
        elif isinstance(part, ImagePart):
            parts.append(_image_part(part.image_url.url, where + ".image_url.url"))
        elif part.type == "refusal" and msg.role == "assistant":
            parts.append({"text": getattr(part, "refusal", "") or ""})
        elif part.type == "input_audio":
            parts.append(_audio_part(getattr(part, "input_audio", None), where + ".input_audio"))
        else:
            raise InvalidRequest(f"content part type {part.type!r} is not supported by Gemini", param=where)
    return parts


def _image_part(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise InvalidRequest("image data URLs must be base64-encoded", param=param)
        return {"inlineData": {"mimeType": mime or "image/jpeg", "data": data}}
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https", "gs"):
        raise InvalidRequest("image_url must be a data:, http(s):// or gs:// URL", param=param)
    mime = mimetypes.guess_type(urlsplit(url).path)[0]
    return {"fileData": {"mimeType": mime or "image/jpeg", "fileUri": url}}


def _audio_part(audio: Any, param: str) -> dict[str, Any]:
    if not isinstance(audio, dict) or not audio.get("data"):
        raise InvalidRequest("input_audio needs base64 'data'", param=param)
    return {"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}", "data": audio["data"]}}


def _parse_args(arguments: str, param: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        args = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise InvalidRequest("tool call arguments must be valid JSON", param=param) from None
    if not isinstance(args, dict):
        raise InvalidRequest("tool call arguments must be a JSON object for Gemini", param=param)
    return args


def _function_response(name: str, text: str) -> dict[str, Any]:
    # Gemini wants a JSON object (a protobuf Struct) as the response; wrap anything else.
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def _declaration(fn: Any, i: int) -> dict[str, Any]:
    decl: dict[str, Any] = {"name": fn.name}
    if fn.description:
        decl["description"] = fn.description
    params = clean_schema(fn.parameters, f"tools[{i}].function.parameters") if fn.parameters else None
    # Gemini rejects an OBJECT schema with empty properties; a function without arguments has no parameters.
    if params and not (str(params.get("type", "")).lower() == "object" and not params.get("properties")):
        decl["parameters"] = params
    return decl


def _tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, str):
        return {"mode": _TOOL_MODES[choice]}
    name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
    if not isinstance(name, str) or not name:
        raise InvalidRequest("tool_choice object must be {type: function, function: {name}}", param="tool_choice")
    return {"mode": "ANY", "allowedFunctionNames": [name]}


def _generation_config(req: ChatCompletionRequest) -> dict[str, Any]:
    if req.logit_bias:
        raise InvalidRequest("Gemini does not support logit_bias", param="logit_bias")
    config: dict[str, Any] = {
        "maxOutputTokens": req.output_limit,
        "temperature": req.temperature,
        "topP": req.top_p,
        "stopSequences": req.stop_list or None,
        "seed": req.seed,
        "candidateCount": req.n,
        "presencePenalty": req.presence_penalty,
        "frequencyPenalty": req.frequency_penalty,
    }
    if req.logprobs:
        config["responseLogprobs"] = True
        config["logprobs"] = req.top_logprobs or None
    fmt = req.response_format
    if fmt is not None and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.json_schema and fmt.json_schema.schema_:
            config["responseSchema"] = clean_schema(fmt.json_schema.schema_, "response_format.json_schema.schema")
    return {k: v for k, v in config.items() if v is not None}


# ---- chat response --------------------------------------------------------------


def chat_completion(data: dict[str, Any], model: str) -> dict[str, Any]:
    raise_if_error(data)
    candidates = data.get("candidates")
    if is_blocked(data):
        choices = [choice_dict(0, None, "content_filter")]
    elif isinstance(candidates, list) and candidates:
        choices = [_choice(c, pos) for pos, c in enumerate(candidates)]
    else:
        raise UpstreamError("Gemini answered without 'candidates'", status=502)
    return completion_dict(
        id=data.get("responseId"),
        model=data.get("modelVersion") or model,
        choices=choices,
        usage=usage_of(data.get("usageMetadata")),
    )


def _choice(candidate: dict[str, Any], pos: int) -> dict[str, Any]:
    texts, calls = candidate_parts(candidate)
    reason = finish_reason(candidate.get("finishReason"), bool(calls)) or ("tool_calls" if calls else "stop")
    content = "".join(texts) if texts else None
    return choice_dict(candidate.get("index", pos), content, reason, calls or None, logprobs(candidate))


# ---- embeddings ------------------------------------------------------------------------------------------


def _texts(req: EmbeddingRequest) -> list[str]:
    texts = req.texts()
    if texts is None:
        raise InvalidRequest("Gemini embeddings take text, not token ids", param="input")
    return texts


def embed_body(req: EmbeddingRequest, model: str) -> dict[str, Any]:
    """Google AI ``batchEmbedContents``."""
    dims = {"outputDimensionality": req.dimensions} if req.dimensions else {}
    return {
        "requests": [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **dims} for t in _texts(req)]
    }


def vertex_embed_body(req: EmbeddingRequest) -> dict[str, Any]:
    """Vertex AI ``predict``."""
    body: dict[str, Any] = {"instances": [{"content": t} for t in _texts(req)]}
    if req.dimensions:
        body["parameters"] = {"outputDimensionality": req.dimensions}
    return body


def embeddings(data: dict[str, Any], req: EmbeddingRequest, model: str) -> dict[str, Any]:
    raise_if_error(data)
    if isinstance(data.get("embeddings"), list):  # Google AI
        items, tokens = data["embeddings"], 0
    elif isinstance(data.get("predictions"), list):  # Vertex AI
        items = [p.get("embeddings") or {} for p in data["predictions"]]
        tokens = sum(int((i.get("statistics") or {}).get("token_count", 0)) for i in items)
    else:
        raise UpstreamError("Gemini answered without 'embeddings'", status=502)
    if not items or not all(isinstance(i.get("values"), list) for i in items):
        raise UpstreamError("Gemini answered an embedding without 'values'", status=502)
    vectors = np.array([i["values"] for i in items], dtype=np.float32)
    if req.dimensions:
        # Google documents truncated outputs as not normalised; OpenAI clients expect unit vectors.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms == 0, 1.0, norms)
    return embedding_response(vectors, model=model, prompt_tokens=tokens, encoding_format=req.encoding_format)
