"""``/v1/knowledge_bases``: create and list knowledge bases, add (JSON or file upload), list and delete documents,
search. Errors come back in OpenAI's shape."""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portico.context.knowledge.base import FUSIONS, MODES, KnowledgeBase, SearchRequest
from portico.context.knowledge.filters import FilterError
from portico.context.knowledge.loaders import LoadedDocument, UnsupportedFormat, from_text, load_bytes
from portico.context.knowledge.manager import KnowledgeBaseExists, UnknownKnowledgeBase
from portico.context.knowledge.recency import Recency
from portico.context.knowledge.service import knowledge_of
from portico.protocol.errors import InvalidRequest, NotFound, PorticoError
from portico.runtime import Runtime
from portico.server.auth import caller_of
from portico.server.body import loads, read_body

MAX_K = 200


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def _body(request: Request) -> dict[str, Any]:
    rt: Runtime = request.app.state.runtime
    raw = await read_body(request, rt.cfg.server.max_body_bytes)
    body = loads(raw or b"{}")
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


async def _kb(request: Request) -> KnowledgeBase:
    name = request.path_params["kb"]
    try:
        return await knowledge_of(request.app.state.runtime).get(name)
    except UnknownKnowledgeBase:
        raise NotFound(f"knowledge base '{name}' does not exist", code="knowledge_base_not_found") from None
    except ValueError as e:
        raise InvalidRequest(str(e), code="knowledge_base_unusable") from None


async def create_knowledge_base(request: Request) -> Response:
    await caller_of(request)
    body = await _body(request)
    name = body.pop("name", None)
    if not isinstance(name, str):
        raise InvalidRequest("'name' is required", param="name")
    kbs = knowledge_of(request.app.state.runtime)
    if kbs.embed is None:
        raise InvalidRequest("knowledge bases need an embedding model: add a model with type: embedding")
    try:
        kb = await kbs.create(name, body)
    except KnowledgeBaseExists as e:
        raise PorticoError(str(e), status=409, code="knowledge_base_exists") from None
    except (TypeError, ValueError) as e:
        raise InvalidRequest(str(e)) from None
    return _json(await kb.info(), 201)


async def list_knowledge_bases(request: Request) -> Response:
    await caller_of(request)
    kbs = knowledge_of(request.app.state.runtime)
    data = []
    for name in await kbs.names():
        try:
            data.append(await (await kbs.get(name)).info())
        except ValueError as e:  # e.g. embedded with another model: listed, but marked
            data.append({"object": "knowledge_base", "id": name, "error": str(e)})
    return _json({"object": "list", "data": data})


async def get_knowledge_base(request: Request) -> Response:
    await caller_of(request)
    return _json(await (await _kb(request)).info())


def _from_json(item: Any, i: int) -> tuple[str | None, LoadedDocument]:
    where = f"documents[{i}]" if i >= 0 else ""
    if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
        raise InvalidRequest(f"{where or 'the body'}: 'text' (a non-empty string) is required", param=f"{where}text")
    meta = item.get("metadata") or {}
    if not isinstance(meta, dict):
        raise InvalidRequest("'metadata' must be an object", param=f"{where}metadata")
    doc_id = item.get("id")
    if doc_id is not None and (not isinstance(doc_id, str) or not doc_id):
        raise InvalidRequest("'id' must be a non-empty string", param=f"{where}id")
    doc = from_text(item["text"], str(item.get("source") or doc_id or "api"), str(item.get("title") or ""))
    doc.metadata.update(meta)
    return doc_id, doc


async def _from_upload(request: Request) -> list[tuple[str | None, LoadedDocument]]:
    rt: Runtime = request.app.state.runtime
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > rt.cfg.server.max_body_bytes:  # before the parser spools it
        raise InvalidRequest(f"Request body is larger than {rt.cfg.server.max_body_bytes} bytes", status=413,
                             code="request_too_large")  # fmt: skip
    form = await request.form(max_part_size=rt.cfg.server.max_body_bytes)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidRequest("multipart uploads need a 'file' part", param="file")
    meta_raw = form.get("metadata")
    try:
        meta = json.loads(meta_raw) if isinstance(meta_raw, str) and meta_raw else {}
    except json.JSONDecodeError:
        raise InvalidRequest("'metadata' must be a JSON object", param="metadata") from None
    if not isinstance(meta, dict):
        raise InvalidRequest("'metadata' must be a JSON object", param="metadata")
    filename = PurePath(upload.filename or "upload.txt").name
    given = form.get("id")
    try:
        docs = load_bytes(await upload.read(), filename)
    except UnsupportedFormat as e:
        raise InvalidRequest(str(e), param="file", code="unsupported_file_type") from None
    except Exception as e:  # a broken PDF/DOCX: the client's file, not our failure
        raise InvalidRequest(f"could not read {filename}: {e}", param="file", code="unreadable_file") from None
    base = given if isinstance(given, str) and given else filename
    out = []
    for n, d in enumerate(docs):
        d.metadata.update(meta)
        doc_id = base if len(docs) == 1 else f"{base}#{d.id or n}"
        out.append((doc_id, d))
    return out


async def add_documents(request: Request) -> Response:
    await caller_of(request)
    kb = await _kb(request)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        items = await _from_upload(request)
    else:
        body = await _body(request)
        if isinstance(body.get("documents"), list):
            items = [_from_json(d, i) for i, d in enumerate(body["documents"])]
        else:
            items = [_from_json(body, -1)]
    docs = []
    for doc_id, d in items:
        docs.append((doc_id or d.id or _derived_id(d), d))
    try:
        results = await kb.add(docs)
    except ValueError as e:
        raise InvalidRequest(str(e)) from None
    data = [{"object": "knowledge_base.document", "id": r.id, "status": r.status, "chunks": r.chunks}
            for r in results]  # fmt: skip
    return _json({"object": "list", "data": data}, 200)


def _derived_id(doc: LoadedDocument) -> str:
    from portico.context.knowledge.base import content_hash

    return "doc_" + content_hash(doc)[:24]


async def list_documents(request: Request) -> Response:
    await caller_of(request)
    kb = await _kb(request)
    try:
        limit = min(1000, max(1, int(request.query_params.get("limit", "100"))))
    except ValueError:
        raise InvalidRequest("limit must be an integer", param="limit") from None
    after = request.query_params.get("after", "")
    rows = await kb.documents(limit, after)
    return _json({"object": "list", "data": [r.public() for r in rows], "has_more": len(rows) == limit})


async def delete_document(request: Request) -> Response:
    await caller_of(request)
    kb = await _kb(request)
    doc_id = request.path_params["doc_id"]
    if not await kb.delete(doc_id):
        raise NotFound(f"document '{doc_id}' does not exist in '{kb.name}'", code="document_not_found")
    return _json({"object": "knowledge_base.document", "id": doc_id, "deleted": True})


async def search(request: Request) -> Response:
    await caller_of(request)
    kb = await _kb(request)
    body = await _body(request)
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InvalidRequest("'query' (a non-empty string) is required", param="query")
    k = body.get("k", 5)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidRequest(f"'k' must be an integer from 1 to {MAX_K}", param="k")
    mode = body.get("mode", "hybrid")
    if mode not in MODES:
        raise InvalidRequest(f"'mode' must be one of {', '.join(MODES)}", param="mode")
    fusion = body.get("fusion")
    if fusion is not None and fusion not in FUSIONS:
        raise InvalidRequest(f"'fusion' must be one of {', '.join(FUSIONS)}", param="fusion")
    filters = body.get("filters")
    if filters is not None and not isinstance(filters, dict):
        raise InvalidRequest("'filters' must be an object", param="filters")
    try:
        recency = Recency.parse(body.get("recency"))
    except (TypeError, ValueError) as e:
        raise InvalidRequest(str(e), param="recency") from None
    try:
        hits = await kb.search(SearchRequest(query=query, k=k, mode=mode, filters=filters, fusion=fusion,
                                             recency=recency))  # fmt: skip
    except FilterError as e:
        raise InvalidRequest(str(e), param="filters") from None
    return _json({"object": "list", "data": hits, "mode": mode})


def routes() -> list[Route]:
    base = "/v1/knowledge_bases"
    return [
        Route(base, create_knowledge_base, methods=["POST"]),
        Route(base, list_knowledge_bases, methods=["GET"]),
        Route(base + "/{kb}", get_knowledge_base, methods=["GET"]),
        Route(base + "/{kb}/documents", add_documents, methods=["POST"]),
        Route(base + "/{kb}/documents", list_documents, methods=["GET"]),
        Route(base + "/{kb}/documents/{doc_id:path}", delete_document, methods=["DELETE"]),
        Route(base + "/{kb}/search", search, methods=["POST"]),
    ]
