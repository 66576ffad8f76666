"""Loki-style targets: `all` runs every service in one process; a single
target runs one service, as one Kubernetes Deployment does."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.trace import TracerProvider

from services.embedder.service import build_embedder
from services.indexer.service import build_indexer
from services.kit.component import Component
from services.kit.config import Settings, Target
from services.reranker.service import build_reranker
from services.searcher.service import build_searcher

BUILDERS: dict[str, Callable[[Settings, TracerProvider | None], Component]] = {
    "embedder": build_embedder,
    "indexer": build_indexer,
    "searcher": build_searcher,
    "reranker": build_reranker,
}


def components_for(
    target: Target, settings: Settings, tracer_provider: TracerProvider | None = None
) -> list[Component]:
    names = list(BUILDERS) if target == "all" else [target]
    return [BUILDERS[name](settings, tracer_provider) for name in names]
