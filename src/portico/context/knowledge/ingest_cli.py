"""``portico ingest KB PATH…``: send files to a running Portico's knowledge base, with a progress bar.

Resumable: files are parsed locally first and a file whose documents all have the hash the server already stores
is not sent again, so re-running after an interruption (or after editing a few files) only uploads what changed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from portico.context.knowledge.loaders import SUPPORTED, load_bytes

err = Console(stderr=True)


def collect(paths: list[Path]) -> list[tuple[Path, str]]:
    """(file, document id) for every supported file; ids are paths relative to the directory given."""
    out: list[tuple[Path, str]] = []
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in SUPPORTED and not any(x.startswith(".") for x in f.parts):
                    out.append((f, f.relative_to(p).as_posix()))
        elif p.is_file():
            out.append((p, p.name))
        else:
            raise typer.BadParameter(f"{p}: no such file or directory")
    return out


def local_hashes(data: bytes, path: Path, doc_id: str) -> dict[str, str]:
    """The ids and hashes the server will compute for this upload (same loader, same id rules)."""
    from portico.context.knowledge.base import content_hash  # numpy, bm25s: only when ingesting

    docs = load_bytes(data, path.name)
    if len(docs) == 1:
        return {doc_id: content_hash(docs[0])}
    return {f"{doc_id}#{d.id or n}": content_hash(d) for n, d in enumerate(docs)}


def _server_hashes(client: httpx.Client, kb: str) -> dict[str, str]:
    out: dict[str, str] = {}
    after = ""
    while True:
        r = client.get(f"/v1/knowledge_bases/{kb}/documents", params={"limit": 1000, "after": after})
        r.raise_for_status()
        body = r.json()
        out.update({d["id"]: d["hash"] for d in body["data"]})
        if not body.get("has_more") or not body["data"]:
            return out
        after = body["data"][-1]["id"]


def _fail(r: httpx.Response, what: str) -> None:
    try:
        msg = r.json()["error"]["message"]
    except Exception:
        msg = r.text[:300]
    err.print(f"[red]error:[/red] {what}: {r.status_code} {msg}", highlight=False)
    raise typer.Exit(1)


def ingest(
    kb: Annotated[str, typer.Argument(help="Knowledge base name (created if missing)")],
    paths: Annotated[list[Path], typer.Argument(help="Files or directories (.txt .md .html .pdf .docx .csv .jsonl)")],
    url: Annotated[str, typer.Option("--url", help="Portico's base URL")] = "http://127.0.0.1:8080",
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="PORTICO_API_KEY", help="Portico key")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Tokens per chunk, for a new knowledge base")] = None,
    chunk_overlap: Annotated[int | None, typer.Option(help="Overlap in tokens, for a new knowledge base")] = None,
) -> None:
    """Add files to a knowledge base through a running Portico; unchanged files are skipped (resumable)."""
    files = collect(paths)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    timeout = float(os.environ.get("PORTICO_INGEST_TIMEOUT", "600"))
    counts = {"created": 0, "replaced": 0, "unchanged": 0, "failed": 0}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout) as client:
        try:
            opts = {k: v for k, v in (("chunk_size", chunk_size), ("chunk_overlap", chunk_overlap)) if v is not None}
            r = client.post("/v1/knowledge_bases", json={"name": kb, **opts})
        except httpx.HTTPError as e:
            err.print(f"[red]error:[/red] cannot reach Portico at {url}: {e}", highlight=False)
            raise typer.Exit(1) from None
        if r.status_code not in (201, 409):
            _fail(r, f"creating knowledge base '{kb}'")
        known = _server_hashes(client, kb)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task(f"ingest → {kb}", total=len(files))
            for path, doc_id in files:
                bar.update(task, description=f"ingest → {kb}: {doc_id[-40:]}")
                data = path.read_bytes()
                try:
                    mine = local_hashes(data, path, doc_id)
                except Exception as e:
                    err.print(f"[yellow]skipped[/yellow] {path}: {e}", highlight=False)
                    counts["failed"] += 1
                    bar.advance(task)
                    continue
                if mine and all(known.get(i) == h for i, h in mine.items()):
                    counts["unchanged"] += len(mine)
                    bar.advance(task)
                    continue
                r = client.post(f"/v1/knowledge_bases/{kb}/documents", files={"file": (path.name, data)},
                                data={"id": doc_id})  # fmt: skip
                if r.status_code != 200:
                    err.print(f"[yellow]failed[/yellow] {path}: {r.status_code} {r.text[:200]}", highlight=False)
                    counts["failed"] += 1
                else:
                    for d in r.json()["data"]:
                        counts[d["status"]] += 1
                bar.advance(task)
    Console().print(", ".join(f"{k}: {v}" for k, v in counts.items()), highlight=False)
    if counts["failed"]:
        raise typer.Exit(1)
