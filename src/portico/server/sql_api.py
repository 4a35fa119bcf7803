"""``POST /v1/sql_sources/{name}/query``: ``{"question": …}`` (generated, validated, run, answered) or ``{"sql": …}``
(validated and run). Returns the structured result (``sql``, ``columns``, ``rows``, ``truncated``, ``tables``);
blocked SQL is a 400 in OpenAI's error shape whose ``code`` is the validator's rule."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portico.context.sql.engine import SqlExecutionError
from portico.context.sql.generate import SqlAnswerer
from portico.context.sql.service import SqlResult, UnknownSource, sql_of
from portico.context.sql.validate import Rejection
from portico.protocol.errors import InvalidRequest, NotFound, PorticoError
from portico.runtime import Runtime
from portico.server.auth import caller_of
from portico.server.knowledge_api import _body, _json  # the /v1 JSON helpers (body size limit, orjson)


def _model(rt: Runtime, source_model: str | None, asked: object) -> str:
    if asked is not None:
        if not isinstance(asked, str) or rt.cfg.model(asked) is None or rt.cfg.model(asked).type != "chat":
            raise InvalidRequest(f"'{asked}' is not a chat model", param="model", code="model_not_found")
        return asked
    if source_model is not None:
        return source_model
    chat = next((m.name for m in rt.cfg.models if m.type == "chat"), None)
    if chat is None:
        raise InvalidRequest("questions need a chat model: add one, or send 'sql'", param="model")
    return chat


async def query(request: Request) -> Response:
    await caller_of(request)
    rt: Runtime = request.app.state.runtime
    name = request.path_params["name"]
    try:
        source = sql_of(rt).get(name)
    except UnknownSource:
        raise NotFound(f"sql source '{name}' does not exist", code="sql_source_not_found") from None
    body = await _body(request)
    question, sql = body.get("question"), body.get("sql")
    if (question is None) == (sql is None):
        raise InvalidRequest("send exactly one of 'question' or 'sql'", param="question")
    try:
        await source.open()
        if sql is not None:
            if not isinstance(sql, str):
                raise InvalidRequest("'sql' must be a string", param="sql")
            checked, rows = await source.run(sql)
            result = SqlResult(checked.sql, rows.columns, rows.rows, rows.truncated, list(checked.tables))
            return _json({"object": "sql.result", "source": name, **result.to_dict()})
        if not isinstance(question, str) or not question.strip():
            raise InvalidRequest("'question' must be a non-empty string", param="question")
        model = _model(rt, source.cfg.model, body.get("model"))
        got = await SqlAnswerer(rt.gateway, rt.prices).answer(source, question, model)
        return _json({"object": "sql.result", "source": name, **got.to_dict()})
    except Rejection as r:
        raise InvalidRequest(f"blocked by rule {r.rule}: {r.message}", param="sql", code=r.rule) from None
    except SqlExecutionError as e:
        raise InvalidRequest(f"{e.rule}: {e.message}", param="sql", code=e.rule) from None
    except (OSError, ValueError, SQLAlchemyError) as e:
        msg = f"sql source '{name}' is unavailable: {e}"
        raise PorticoError(msg, status=503, code="sql_source_unavailable") from None


def routes() -> list[Route]:
    return [Route("/v1/sql_sources/{name}/query", query, methods=["POST"])]
