"""``portico db …``: the database's schema revision, its upgrade, and the retention purge run by hand.

``serve`` creates the schema in an empty database by itself but refuses an existing one that is not at the
newest revision: upgrading is this command's job, run once (by one process) per deploy.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from portico.cli_config import load_for_cli
from portico.storage.db import Database

db_app = typer.Typer(no_args_is_help=True, help="The database: schema revision, upgrade, retention purge.")
err = Console(stderr=True, soft_wrap=True)  # messages with URLs and commands stay on one line
out = Console(soft_wrap=True)

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="YAML config file")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="Database URL (default: storage.url of the config)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


def _database(config: str | None, url: str | None) -> Database:
    return Database(url or load_for_cli(config).storage_url)


def _run(db: Database, work: Any) -> Any:
    async def go() -> Any:
        try:
            return await work
        finally:
            await db.close()

    return asyncio.run(go())


@db_app.command("current")
def current(config: ConfigOpt = None, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """The database's schema revision and the newest one; exit code 1 unless it is current."""
    from portico.storage.migrate import redacted_url, state

    db = _database(config, url)
    st = _run(db, state(db))
    view = {"database": redacted_url(db), "revision": st.current, "head": st.head, "status": st.status}
    if as_json:
        print(orjson.dumps(view).decode())
    else:
        out.print(f"{view['database']}: revision {st.current or '-'} (head {st.head}): {st.status}", highlight=False)
    if st.status != "current":
        raise typer.Exit(1)


@db_app.command("upgrade")
def upgrade(
    config: ConfigOpt = None,
    url: UrlOpt = None,
    revision: Annotated[str, typer.Option(help="Target revision")] = "head",
) -> None:
    """Migrate the database to the newest schema (or --revision). Safe to run again; stop other writers first
    if you want a consistent backup beforehand."""
    from portico.storage.migrate import SchemaError, redacted_url, upgrade

    db = _database(config, url)
    try:
        before, after = _run(db, upgrade(db, revision))
    except SchemaError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
    was = before.current or ("empty" if before.status == "empty" else "unversioned (before migrations)")
    if before.current == after.current:
        out.print(f"{redacted_url(db)}: already at {after.current}", highlight=False)
    else:
        out.print(f"{redacted_url(db)}: {was} -> {after.current}", highlight=False)


@db_app.command("purge")
def purge(
    config: ConfigOpt = None,
    url: UrlOpt = None,
    traces_days: Annotated[float | None, typer.Option(help="Override retention.traces_days")] = None,
    usage_days: Annotated[float | None, typer.Option(help="Override retention.usage_days (>= 31)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete what is past retention now (the server does it in the background every interval)."""
    from portico.storage.retention import RetentionPolicy
    from portico.storage.retention import purge as run_purge

    cfg = load_for_cli(config)
    r = cfg.retention
    if usage_days is not None and usage_days < 31:
        err.print("[red]error:[/red] --usage-days must be at least 31 (monthly budgets read a whole month)")
        raise typer.Exit(2)
    policy = RetentionPolicy(traces_days=traces_days if traces_days is not None else r.traces_days,
                             usage_days=usage_days if usage_days is not None else r.usage_days,
                             batch_size=r.batch_size)  # fmt: skip
    db = Database(url or cfg.storage_url)

    async def go() -> Any:
        await db.create_schema()  # refuses an unmigrated database like serve does
        return await run_purge(db, policy)

    from portico.storage.migrate import SchemaError

    try:
        result = _run(db, go())
    except SchemaError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        print(orjson.dumps({"deleted": result.deleted, "batches": result.batches, "seconds": result.seconds}).decode())
    else:
        for table, n in result.deleted.items():
            out.print(f"{table}: {n} row(s) deleted")
        out.print(f"{result.batches} batch(es) in {result.seconds:.2f} s")


@db_app.command("revision")
def revision(
    message: Annotated[str, typer.Option("--message", "-m", help="What the revision changes")],
) -> None:
    """For developers: write a new revision in portico/storage/migrations/versions, autogenerated from the tables
    the code defines against a scratch SQLite database at head. Review it before committing."""
    import tempfile

    import portico.runtime  # noqa: F401  (every module that defines a table registers it on the metadata)
    from portico.storage.db import metadata
    from portico.storage.migrate import revision as make_revision
    from portico.storage.migrate import upgrade

    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/scratch.db")

        async def go() -> str:
            await upgrade(db)
            return await make_revision(message, db, metadata)

        out.print(f"wrote {_run(db, go())}", highlight=False)


def prepare_for_serve(url: str) -> None:
    """``serve`` calls this before binding its port: an empty database gets the schema, one at head passes, any
    other stops the start with the message saying to run ``portico db upgrade``."""
    from sqlalchemy.exc import DBAPIError

    from portico.storage.migrate import SchemaError, redacted_url

    db = Database(url)
    try:
        _run(db, db.create_schema())
    except SchemaError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
    except (OSError, DBAPIError) as e:
        err.print(f"[red]error:[/red] cannot open the database {redacted_url(db)}: {type(e).__name__}: {e}",
                  highlight=False)  # fmt: skip
        raise typer.Exit(2) from None
