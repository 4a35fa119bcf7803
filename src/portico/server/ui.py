"""``/ui``: the dashboard, plain static files (no build step, no CDN).

The files hold no data: every number on the page comes from ``/admin/*``, which the master key guards, so the
page asks for the key and sends it as a bearer token.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static" / "ui"


async def _to_index(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=308)


def routes() -> list[BaseRoute]:
    return [
        Route("/ui", _to_index, methods=["GET", "HEAD"]),
        Mount("/ui", app=StaticFiles(directory=STATIC, html=True), name="ui"),
    ]
