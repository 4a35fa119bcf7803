"""Persistent state: SQLite (embedded default) or PostgreSQL through SQLAlchemy's async engine."""

from portico.storage.db import Database

__all__ = ["Database"]
