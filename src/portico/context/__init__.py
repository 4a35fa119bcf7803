"""Context construction: prompt assembly now; knowledge bases, retrieval and rewriting arrive with their issue."""
