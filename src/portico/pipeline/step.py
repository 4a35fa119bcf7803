"""A pipeline step: declared inputs and outputs (fields of RequestContext) and one async ``run``."""

from __future__ import annotations

from typing import ClassVar

from portico.pipeline.context import RequestContext


class Step:
    """Subclass and set ``name``, ``reads``, ``writes``; implement ``run``.

    ``reads``/``writes`` name RequestContext fields. The pipeline checks at build time that every read is
    written by an earlier stage (or is an initial field) and that parallel steps do not write the same field.
    A step answers the request early with ``ctx.short_circuit(...)``.
    """

    name: ClassVar[str] = "step"
    reads: ClassVar[frozenset[str]] = frozenset()
    writes: ClassVar[frozenset[str]] = frozenset()
    # A paired step that runs last, after every other step of the pipeline (e.g. the cache's write, which must
    # see the answer after output checks). Skipped, like every later step, when the request is answered early.
    closer: Step | None = None

    async def run(self, ctx: RequestContext) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<step {self.name}>"
