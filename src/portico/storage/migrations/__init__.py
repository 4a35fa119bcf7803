"""Alembic migrations (``env.py`` and ``versions/``), run by ``portico.storage.migrate``; see ``portico db``."""
