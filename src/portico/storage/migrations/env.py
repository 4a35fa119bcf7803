"""Alembic's entry point: run the revisions on the connection ``portico.storage.migrate`` passes in.

Online only (there is no alembic.ini and no URL here): the caller opens the connection, holds the migration lock
and owns the transaction.
"""

from __future__ import annotations

from alembic import context

from portico.storage.migrate import only_tables_of


def run(config) -> None:  # type: ignore[no-untyped-def]
    conn = config.attributes["connection"]
    target = config.attributes.get("target_metadata")
    context.configure(
        connection=conn,
        target_metadata=target,
        include_name=only_tables_of(target) if target is not None else None,
        compare_type=True,
        render_as_batch=conn.dialect.name == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


try:
    _config = context.config
except (NameError, AttributeError):  # imported outside a migration run (the import-graph test imports every module)
    _config = None
if _config is not None:
    run(_config)
