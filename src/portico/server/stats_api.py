"""``GET /admin/stats``: time series for the dashboard's charts. Guarded by the master key like all of ``/admin``.

Query: ``since`` / ``until`` (ISO 8601 or epoch seconds; default the last 24 hours), ``bucket`` (seconds; default
chosen from the window), ``group_by`` (model | key | application | deployment).
"""

from __future__ import annotations

import time

import orjson
from starlette.requests import Request
from starlette.responses import Response

from portico.protocol.errors import InvalidRequest
from portico.runtime import Runtime
from portico.server.admin import parse_when
from portico.server.auth import require_admin
from portico.storage.stats import GROUP_COLUMNS, MAX_BUCKETS, Window, dashboard_stats, pick_bucket

DAY = 86400.0


async def get_stats(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    q = request.query_params
    until = parse_when(q.get("until"), "until") or time.time()
    since = parse_when(q.get("since"), "since") or until - DAY
    if since >= until:
        raise InvalidRequest("since must be before until", param="since")
    group_by = q.get("group_by") or "model"
    if group_by not in GROUP_COLUMNS:
        raise InvalidRequest(f"group_by: use one of {', '.join(GROUP_COLUMNS)}", param="group_by")
    bucket = pick_bucket(since, until)
    if q.get("bucket"):
        try:
            bucket = int(q["bucket"])
        except ValueError:
            raise InvalidRequest("bucket must be an integer number of seconds", param="bucket") from None
        if bucket < 1:
            raise InvalidRequest("bucket must be at least 1 second", param="bucket")
    if (until - since) / bucket > MAX_BUCKETS:
        raise InvalidRequest(f"the window holds more than {MAX_BUCKETS} buckets; widen bucket", param="bucket")
    await rt.usage.flush()  # the charts include every request answered so far
    stats = await dashboard_stats(rt.db, Window(since, until, bucket), group_by)  # type: ignore[arg-type]
    stats["feedback"] = await rt.feedback.stats(since, until)  # by metric, application, version, model
    return Response(orjson.dumps(stats), media_type="application/json")
