"""What step factories share: option validation with a one-line error, and a stock answer without a model call."""

from __future__ import annotations

import time
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from portico.pipeline.context import RequestContext
from portico.protocol.chat import choice_dict, completion_dict, usage_dict

OptionsT = TypeVar("OptionsT", bound=BaseModel)


def parse_options(model: type[OptionsT], options: dict[str, Any]) -> OptionsT:
    """The step's options, or a ValueError naming the first bad option (the runtime adds which step it is)."""
    try:
        return model.model_validate(options)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        raise ValueError(f"{where}: {first['msg']}") from None


def stock_answer(ctx: RequestContext, step: str, text: str) -> None:
    """Answer now with ``text``, without calling a model (a blocked prompt, an out-of-scope question)."""
    response = completion_dict(
        id=f"chatcmpl-{ctx.request_id}",
        model=ctx.model,
        created=int(time.time()),
        choices=[choice_dict(0, text, "stop")],
        usage=usage_dict(0, 0),
    )
    ctx.short_circuit(step, response=response)
