"""The eval report: one self-contained HTML file (inline CSS and SVG, nothing fetched) and a markdown summary.

Plots: each scorer's mean by variant with its 95% bootstrap CI, cost vs quality (one point per variant), and the
latency distribution per variant (box: p5/p25/p50/p75/p95). Tables: the paired tests between variants, pairwise
judges, gates, and per-item scores where the variants differ first.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

import numpy as np

PALETTE = ["#2f6fde", "#e0823d", "#3aa17e", "#9b59b6", "#d4b000", "#17a2b8", "#c0567a", "#8c8c8c"]
MAX_ITEMS = 300  # rows of the per-item table


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _p(v: float | None) -> str:
    return "-" if v is None else ("< 0.001" if v < 0.001 else f"{v:.3f}")


def _scorers(summary: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for v in summary["variants"].values():
        for s in v["scorers"]:
            if s not in seen:
                seen.append(s)
    return seen


def score_plot(summary: dict[str, Any], scorer: str) -> str:
    """Horizontal bars (mean) with CI whiskers, one row per variant, on a 0..1 axis."""
    variants = list(summary["variants"])
    row, left, width = 26, 140, 360
    height = row * len(variants) + 28
    parts = [f'<svg viewBox="0 0 {left + width + 60} {height}" width="{left + width + 60}" role="img" '
             f'aria-label="{escape(scorer)} by variant">']  # fmt: skip
    for t in (0, 0.25, 0.5, 0.75, 1):
        x = left + t * width
        parts.append(f'<line x1="{x}" x2="{x}" y1="4" y2="{height - 20}" stroke="#e3e6ec"/>'
                     f'<text x="{x}" y="{height - 6}" text-anchor="middle">{t:g}</text>')  # fmt: skip
    for i, v in enumerate(variants):
        st = summary["variants"][v]["scorers"].get(scorer, {})
        y = 6 + i * row
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{escape(v)}</text>')
        if not st.get("n"):
            parts.append(f'<text x="{left + 4}" y="{y + 14}" fill="#888">not scored</text>')
            continue
        mean, (lo, hi) = st["mean"], st["ci"]
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{mean * width:.1f}" height="{row - 10}" fill="{color}">'
                     f'<title>{escape(v)}: {mean:.3f} [{lo:.3f}, {hi:.3f}] n={st["n"]}</title></rect>')  # fmt: skip
        ym = y + 3 + (row - 10) / 2
        parts.append(f'<line x1="{left + lo * width:.1f}" x2="{left + hi * width:.1f}" y1="{ym}" y2="{ym}" '
                     f'stroke="#222" stroke-width="1.5"/>'
                     f'<text x="{left + width + 6}" y="{y + 14}">{mean:.3f}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def cost_quality_plot(summary: dict[str, Any], scorer: str) -> str:
    pts = []
    for i, (v, st) in enumerate(summary["variants"].items()):
        q = st["scorers"].get(scorer, {}).get("mean")
        c = st["cost_usd"]["mean"]
        if q is not None and c is not None:
            pts.append((v, c, q, PALETTE[i % len(PALETTE)]))
    if not pts:
        return '<p class="muted">No cost or score to plot.</p>'
    W, H, L, B = 460, 240, 60, 30
    cmax = max(p[1] for p in pts) or 1e-9
    parts = [f'<svg viewBox="0 0 {W} {H}" width="{W}" role="img" aria-label="cost vs quality">',
             f'<line x1="{L}" x2="{W - 10}" y1="{H - B}" y2="{H - B}" stroke="#999"/>',
             f'<line x1="{L}" x2="{L}" y1="10" y2="{H - B}" stroke="#999"/>',
             f'<text x="{(W + L) / 2}" y="{H - 4}" text-anchor="middle">mean cost per request (USD, max '
             f"{cmax:.2g})</text>",
             f'<text x="12" y="{(H - B) / 2}" transform="rotate(-90 12 {(H - B) / 2})" text-anchor="middle">'
             f"{escape(scorer)}</text>"]  # fmt: skip
    for v, c, q, color in pts:
        x = L + (W - L - 30) * (c / cmax)
        y = (H - B) - (H - B - 20) * q
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{color}"><title>{escape(v)}: ${c:.6f}, '
                     f'{q:.3f}</title></circle><text x="{x + 9:.1f}" y="{y + 4:.1f}">{escape(v)}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def latency_plot(summary: dict[str, Any]) -> str:
    rows = [(v, st["latency_ms"].get("values") or []) for v, st in summary["variants"].items()]
    top = max((max(vals) for _, vals in rows if vals), default=0.0) or 1.0
    row, left, width = 26, 140, 360
    height = row * len(rows) + 28
    parts = [f'<svg viewBox="0 0 {left + width + 80} {height}" width="{left + width + 80}" role="img" '
             'aria-label="latency by variant">']  # fmt: skip
    for t in (0, 0.5, 1):
        x = left + t * width
        parts.append(f'<text x="{x}" y="{height - 6}" text-anchor="middle">{t * top:.0f} ms</text>')
    for i, (v, vals) in enumerate(rows):
        y = 6 + i * row
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{escape(v)}</text>')
        if not vals:
            continue
        p5, p25, p50, p75, p95 = (float(x) for x in np.quantile(vals, [0.05, 0.25, 0.5, 0.75, 0.95]))
        sx = lambda ms: left + width * ms / top  # noqa: E731
        color = PALETTE[i % len(PALETTE)]
        mid = y + row / 2 - 3
        parts.append(f'<line x1="{sx(p5):.1f}" x2="{sx(p95):.1f}" y1="{mid}" y2="{mid}" stroke="#555"/>'
                     f'<rect x="{sx(p25):.1f}" y="{y + 4}" width="{max(1.0, sx(p75) - sx(p25)):.1f}" '
                     f'height="{row - 14}" fill="{color}" opacity="0.7"><title>{escape(v)}: p50 {p50:.0f} ms, '
                     f'p95 {p95:.0f} ms</title></rect>'
                     f'<line x1="{sx(p50):.1f}" x2="{sx(p50):.1f}" y1="{y + 4}" y2="{y + row - 10}" stroke="#111" '
                     f'stroke-width="2"/><text x="{left + width + 6}" y="{y + 14}">p50 {p50:.0f}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _variant_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["variant", "cells", "errors", "cost $/request", "cost $ total", "p50 ms", "p95 ms"]
    rows = []
    for v, st in summary["variants"].items():
        lat = st["latency_ms"]
        rows.append([escape(v), str(st["cells"]), str(st["errors"]), _f(st["cost_usd"]["mean"], 6),
                     _f(st["cost_usd"]["total"], 6), _f(lat["p50"], 0), _f(lat["p95"], 0)])  # fmt: skip
    return head, rows


def _score_rows(summary: dict[str, Any], scorers: list[str]) -> tuple[list[str], list[list[str]]]:
    """One row per scorer x variant: mean, its CI, and (with repeats) pass@k, pass^k and the flaky share."""
    k = summary["repeats"]
    head = ["scorer", "variant", "items", "mean", "95% CI"]
    if k > 1:
        head += [f"pass@{k}", f"pass^{k}", "flaky items"]
    rows = []
    for s in scorers:
        for v, st in summary["variants"].items():
            x = st["scorers"].get(s, {})
            if not x.get("n"):
                rows.append([escape(s), escape(v), "0", "-", "-"] + (["-"] * 3 if k > 1 else []))
                continue
            row = [escape(s), escape(v), str(x["n"]), f"{x['mean']:.3f}", f"[{x['ci'][0]:.3f}, {x['ci'][1]:.3f}]"]
            if k > 1:
                row += [f"{x['pass_at_k']:.2f}", f"{x['pass_all_k']:.2f}", f"{x['flaky']:.2f}"]
            rows.append(row)
    return head, rows


def _item_rows(summary: dict[str, Any], scorer: str) -> list[list[str]]:
    variants = list(summary["variants"])
    items = summary.get("items", {})

    def spread(item: str) -> float:
        vals = [items[item].get(v, {}).get(scorer) for v in variants]
        vals = [x for x in vals if x is not None]
        return (max(vals) - min(vals)) if vals else 0.0

    order = sorted(items, key=lambda i: (-spread(i), i))[:MAX_ITEMS]
    return [[escape(i), *(_f(items[i].get(v, {}).get(scorer)) for v in variants)] for i in order]


def render_html(run: dict[str, Any], summary: dict[str, Any]) -> str:
    scorers = _scorers(summary)
    primary = scorers[0] if scorers else None
    ds = summary.get("dataset", {})
    sections = [f"<h1>Eval {escape(run['name'])}</h1><p class=muted>run {escape(run['run_id'])} · dataset "
                f"{escape(str(ds.get('name')))} v{ds.get('version')} ({ds.get('items')} items, "
                f"{escape(str(ds.get('hash', ''))[:12])}) · {summary['repeats']} repeat(s)</p>"]  # fmt: skip
    gates = summary.get("gates") or []
    if gates:
        rows = [[escape(g["scorer"]), escape(g["variant"]), g.get("statistic", "mean"), _f(g.get("value")),
                 _f(g.get("min")), _f(g.get("baseline_value")),
                 f'<b class="{g["status"]}">{g["status"]}</b>', escape("; ".join(g.get("reasons", [])))]
                for g in gates]  # fmt: skip
        head = ["scorer", "variant", "statistic", "value", "min", "baseline", "status", "why"]
        sections.append("<h2>Gates</h2>" + _table(head, rows))
    sections.append("<h2>Variants</h2>" + _table(*_variant_rows(summary)))
    sections.append("<h2>Scores</h2><p class=muted>mean over items (repeats averaged per item first), 95% "
                    "bootstrap CI over items</p>" + _table(*_score_rows(summary, scorers)))  # fmt: skip
    if scorers:
        figures = [f"<figure><figcaption>{escape(s)}</figcaption>{score_plot(summary, s)}</figure>" for s in scorers]
        sections.append("<h2>Score by variant</h2>" + "".join(figures))
    if summary.get("comparisons"):
        rows = [[escape(c["scorer"]), escape(c["b"]) + " - " + escape(c["a"]), f"{c['diff']:+.3f}",
                 (f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]" if "ci" in c else "-"), _p(c.get("p_bootstrap")),
                 f"{c['wins']}/{c['losses']}/{c['ties']}", _p(c.get("p_sign")), str(c["n"])]
                for c in summary["comparisons"]]  # fmt: skip
        head = ["scorer", "difference", "mean", "95% CI", "p (paired bootstrap)", "better/worse/same", "p (sign)",
                "items"]  # fmt: skip
        sections.append("<h2>Paired comparisons</h2>" + _table(head, rows))
    if summary.get("pairwise"):
        rows = [[escape(p["judge"]), escape(p["a"]), escape(p["b"]), str(p["wins_a"]), str(p["wins_b"]),
                 str(p["ties"]), _f(p["consistency"], 2), _p(p["p_sign"])] for p in summary["pairwise"]]  # fmt: skip
        head = ["judge", "a", "b", "a wins", "b wins", "ties", "position-swap consistency", "p (sign)"]
        sections.append("<h2>Pairwise judges</h2>" + _table(head, rows))
    if primary:
        sections.append(f"<h2>Cost vs {escape(primary)}</h2>" + cost_quality_plot(summary, primary))
    sections.append("<h2>Latency</h2>" + latency_plot(summary))
    if primary:
        sections.append(f"<h2>Items by {escape(primary)}</h2><p class=muted>where variants differ most first"
                        f" (at most {MAX_ITEMS})</p>"
                        + _table(["item", *summary["variants"]], _item_rows(summary, primary), "items"))  # fmt: skip
    style = ("body{font:14px system-ui,sans-serif;margin:24px;color:#1d2430}"
             "table{border-collapse:collapse;margin:8px 0}"
             "td,th{border-bottom:1px solid #e3e6ec;padding:4px 10px;text-align:left}th{background:#f5f6f8}"
             "svg text{font-size:12px;fill:#333}figure{margin:8px 0}figcaption{font-weight:600}.muted{color:#777}"
             ".pass{color:#1e7d3a}.fail{color:#c93c3c}")  # fmt: skip
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Eval {escape(run['name'])}</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>")  # fmt: skip


def render_markdown(run: dict[str, Any], summary: dict[str, Any]) -> str:
    scorers = _scorers(summary)
    ds = summary.get("dataset", {})
    lines = [f"# Eval {run['name']}", "",
             f"run `{run['run_id']}` · dataset {ds.get('name')} v{ds.get('version')} ({ds.get('items')} items) · "
             f"{summary['repeats']} repeat(s)", ""]  # fmt: skip
    for g in summary.get("gates") or []:
        mark = "PASS" if g["status"] == "pass" else "FAIL"
        lines.append(f"- gate {mark}: {g['scorer']} on {g['variant']} = {_f(g.get('value'))}"
                     + (f" ({'; '.join(g['reasons'])})" if g.get("reasons") else ""))  # fmt: skip
    for head, rows in (_variant_rows(summary), _score_rows(summary, scorers)):
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    if summary.get("comparisons"):
        lines += ["", "| scorer | b - a | diff | 95% CI | p (bootstrap) | p (sign) |", "|---|---|---|---|---|---|"]
        for c in summary["comparisons"]:
            ci = f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]" if "ci" in c else "-"
            lines.append(f"| {c['scorer']} | {c['b']} - {c['a']} | {c['diff']:+.3f} | {ci} | "
                         f"{_p(c.get('p_bootstrap'))} | {_p(c.get('p_sign'))} |")  # fmt: skip
    for p in summary.get("pairwise") or []:
        lines.append(f"\n{p['judge']}: {p['a']} wins {p['wins_a']}, {p['b']} wins {p['wins_b']}, ties {p['ties']} "
                     f"(swap consistency {_f(p['consistency'], 2)}, p {_p(p['p_sign'])})")  # fmt: skip
    return "\n".join(lines) + "\n"
