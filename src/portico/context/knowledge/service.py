"""The one KnowledgeBases of a runtime, shared by the HTTP API and the pipeline steps.

Created on first use from the services (config, embedding model) and closed with the runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from portico.context.knowledge.manager import Catalog, DocumentEmbedder, EmbeddedCatalog, KnowledgeBases

_ATTR = "knowledge"


def catalog_for(cfg: Any) -> Catalog:
    kc = getattr(cfg, "knowledge", None)
    if kc is None or kc.store == "embedded":
        return EmbeddedCatalog(Path(cfg.state_dir) / "knowledge")
    from portico.context.knowledge.pgvector import PgCatalog

    url = kc.url or (cfg.storage_url if cfg.storage_url.startswith("postgres") else None)
    if url is None:
        raise ValueError("knowledge.store postgres needs knowledge.url (or a PostgreSQL storage.url)")
    return PgCatalog(url.replace("postgresql+asyncpg://", "postgresql://"))


def knowledge_of(services: Any) -> KnowledgeBases:
    kbs = getattr(services, _ATTR, None)
    if kbs is None:
        cfg = services.cfg
        model = cfg.embedder_model
        embed = services.embedder.embed if model is not None else None
        doc_model = getattr(getattr(cfg, "knowledge", None), "document_embedder", None)
        documents = None
        if embed is not None and doc_model is not None and doc_model != model:
            documents = DocumentEmbedder(services.embedder.for_model(doc_model).embed, embed, doc_model, model)
        kbs = KnowledgeBases(catalog_for(cfg), embed, model, documents)
        setattr(services, _ATTR, kbs)
        services.on_close(kbs.close)
    return kbs
