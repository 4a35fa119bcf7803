"""The one KnowledgeBases of a runtime, shared by the HTTP API and the pipeline steps.

Created on first use from the services (state directory, embedding model) and closed with the runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from portico.context.knowledge.manager import KnowledgeBases

_ATTR = "knowledge"


def knowledge_of(services: Any) -> KnowledgeBases:
    kbs = getattr(services, _ATTR, None)
    if kbs is None:
        cfg = services.cfg
        model = cfg.embedder_model
        embed = services.embedder.embed if model is not None else None
        kbs = KnowledgeBases(Path(cfg.state_dir) / "knowledge", embed, model)
        setattr(services, _ATTR, kbs)
        services.on_close(kbs.close)
    return kbs
