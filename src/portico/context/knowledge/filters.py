"""Metadata filters, Mongo-style: ``{"source": "a.md", "year": {"$gte": 2020}, "lang": {"$in": ["en", "de"]}}``.

Several keys must all match; ``$and``/``$or`` combine filters. Fields are chunk metadata (document metadata,
``source``, ``title``, ``section``, ``document_id``, …). Validated once, then evaluated per chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]
_MISSING = object()


class FilterError(ValueError):
    pass


def _cmp(op: str, want: Any) -> Callable[[Any], bool]:
    if op == "$eq":
        return lambda v: v == want
    if op == "$ne":
        return lambda v: v != want
    if op in ("$in", "$nin"):
        if not isinstance(want, list):
            raise FilterError(f"{op} needs a list")
        s = list(want)
        return (lambda v: _contains(s, v)) if op == "$in" else (lambda v: not _contains(s, v))
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if isinstance(want, bool) or not isinstance(want, int | float | str):
            raise FilterError(f"{op} needs a number or a string")

        def ordered(v: Any) -> bool:
            numbers = isinstance(v, int | float) and isinstance(want, int | float)
            if v is _MISSING or v is None or isinstance(v, bool) or (type(v) is not type(want) and not numbers):
                return False
            return {"$gt": v > want, "$gte": v >= want, "$lt": v < want, "$lte": v <= want}[op]

        return ordered
    if op == "$exists":
        return lambda v: (v is not _MISSING) == bool(want)
    raise FilterError(f"unknown filter operator '{op}'")


def _contains(values: list[Any], v: Any) -> bool:
    if isinstance(v, list):  # a list field matches when any of its items does
        return any(x in values for x in v)
    return v in values


def compile_filter(spec: dict[str, Any] | None) -> Predicate | None:
    if not spec:
        return None
    if not isinstance(spec, dict):
        raise FilterError("filters must be an object")
    preds: list[Predicate] = []
    for field, cond in spec.items():
        if field in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise FilterError(f"{field} needs a non-empty list of filters")
            subs = [p for p in (compile_filter(c) for c in cond) if p is not None]
            preds.append((lambda m, s=subs: all(p(m) for p in s)) if field == "$and"
                         else (lambda m, s=subs: any(p(m) for p in s)))  # fmt: skip
            continue
        if field.startswith("$"):
            raise FilterError(f"unknown filter operator '{field}'")
        if isinstance(cond, dict) and cond and all(str(k).startswith("$") for k in cond):
            tests = [_cmp(op, want) for op, want in cond.items()]
        else:
            tests = [_eq(cond)]
        preds.append(lambda m, f=field, t=tests: all(test(m.get(f, _MISSING)) for test in t))
    return lambda m: all(p(m) for p in preds)


def _eq(want: Any) -> Callable[[Any], bool]:
    return lambda v: v == want or (isinstance(v, list) and want in v)
