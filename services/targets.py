"""Loki-style targets: `all` runs every service in one process; a single
target runs one service, as one Kubernetes Deployment does."""

from __future__ import annotations

from collections.abc import Callable

from services.embedder.service import build_embedder
from services.indexer.service import build_indexer
from services.kit.component import Component, Deps
from services.kit.config import Target
from services.reranker.service import build_reranker
from services.searcher.service import build_searcher

BUILDERS: dict[str, Callable[[Deps], Component]] = {
    "embedder": build_embedder,
    "indexer": build_indexer,
    "searcher": build_searcher,
    "reranker": build_reranker,
}


def components_for(target: Target, deps: Deps) -> list[Component]:
    names = list(BUILDERS) if target == "all" else [target]
    return [BUILDERS[name](deps) for name in names]
