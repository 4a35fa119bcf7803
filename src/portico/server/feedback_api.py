"""``POST /v1/feedback``: judge a served request (or a pair of them) on a configured metric.

Authenticated like ``/v1/chat/completions``; the evaluation service checks that the caller's key made the request.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from portico.evaluation.feedback import FeedbackBody, public
from portico.runtime import Runtime
from portico.server.auth import caller_of
from portico.server.body import read_model

MAX_BODY = 256 * 1024


async def post_feedback(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    caller = await caller_of(request)
    body = await read_model(request, FeedbackBody, MAX_BODY)
    row, created = await rt.feedback.submit(caller, body)
    return Response(orjson.dumps({**public(row), "duplicate": not created}), media_type="application/json")


def routes() -> list[BaseRoute]:
    return [Route("/v1/feedback", post_feedback, methods=["POST"])]
