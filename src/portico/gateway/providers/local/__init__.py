"""In-process models: llama.cpp for chat, sentence-transformers for embeddings (packaged defaults, offline)."""

from portico.gateway.providers.local.chat import LlamaChatBackend
from portico.gateway.providers.local.embeddings import SentenceEmbeddingBackend

__all__ = ["LlamaChatBackend", "SentenceEmbeddingBackend"]
