"""Questions over SQL databases: introspection, a read-only validator, schema/example retrieval, generation."""
