"""Knowledge bases: loading, chunking, storing and searching documents (BM25, vector, hybrid)."""

from portico.context.knowledge.base import KBOptions, KnowledgeBase, SearchRequest
from portico.context.knowledge.manager import KnowledgeBases

__all__ = ["KBOptions", "KnowledgeBase", "KnowledgeBases", "SearchRequest"]
