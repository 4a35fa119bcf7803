"""Caches: the exact response cache (keys, stores, cacheability, pipeline steps)."""
