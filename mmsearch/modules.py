"""Loki-style targets: `all` runs every service in one process; a single
target runs one service, as one Kubernetes Deployment does."""

from __future__ import annotations

from collections.abc import Callable

from mmsearch.embedder.service import build_embedder
from mmsearch.indexer.service import build_indexer
from mmsearch.kit.component import Component, Deps
from mmsearch.kit.config import Target
from mmsearch.reranker.service import build_reranker
from mmsearch.searcher.service import build_searcher

BUILDERS: dict[str, Callable[[Deps], Component]] = {
    "embedder": build_embedder,
    "indexer": build_indexer,
    "searcher": build_searcher,
    "reranker": build_reranker,
}


def components_for(target: Target, deps: Deps) -> list[Component]:
    names = list(BUILDERS) if target == "all" else [target]
    return [BUILDERS[name](deps) for name in names]
