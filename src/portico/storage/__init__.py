"""Persistent state: SQLite (embedded default) or PostgreSQL through SQLAlchemy's async engine."""

from portico.storage.db import Database

__all__ = ["Database"]

# Imported for their side effect: they register their tables on the shared metadata (the models the migrations
# are checked against; storage/migrations makes the tables).
from portico.storage import evals as _evals  # noqa: F401
from portico.storage import feedback as _feedback  # noqa: F401
