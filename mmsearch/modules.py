"""The module table (Loki-style): which components a target runs, and the
shared modules they depend on.

`all` runs every service in one process; a single target runs one service, as
one Kubernetes Deployment does. The store is a module of its own: opened once
for the components that need it (the indexer and the searcher share it under
`all`: an embedded store's directory has one owner), closed after the last of
them stopped. This is the only place that wires packages together, so the
services never import one another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from mmsearch import edge
from mmsearch.embedder.service import build_embedder
from mmsearch.gateway.service import HttpGateway, build_gateway
from mmsearch.indexer.service import build_indexer
from mmsearch.kit.component import Component, Deps, Module
from mmsearch.kit.config import ConfigError, Settings, Target
from mmsearch.kit.server import RunningServer, start_server
from mmsearch.reranker.service import build_reranker
from mmsearch.searcher.service import build_searcher
from mmsearch.stores.provider import StoreProvider, StoreSettings

# Component name -> (builder, needs the store).
STATELESS: dict[str, Callable[[Deps], Component]] = {
    "embedder": build_embedder,
    "reranker": build_reranker,
}
WITH_STORE: dict[str, Callable[[Deps, StoreProvider], Component]] = {
    "indexer": build_indexer,
    "searcher": build_searcher,
}
# Start order under `all`: the embedder first (the others call it), the indexer
# last among the stores' users, and the HTTP gateway last of all, so shutdown
# drains it first (no new HTTP requests while the services behind it drain).
ORDER = ("embedder", "reranker", "searcher", "indexer", "gateway")


def store_settings(settings: Settings) -> StoreSettings:
    return StoreSettings(
        store_dir=settings.store_dir,
        build_unindexed_points=settings.store_build_unindexed_points,
        weaviate_url=settings.weaviate_url,
        weaviate_api_key=settings.weaviate_api_key.get_secret_value(),
        weaviate_grpc_port=settings.weaviate_grpc_port,
        weaviate_shards=settings.weaviate_shards,
        weaviate_replication_factor=settings.weaviate_replication_factor,
        weaviate_multi_tenancy=settings.weaviate_multi_tenancy,
        postgres_dsn=settings.postgres_dsn.get_secret_value(),
        postgres_pool_size=settings.postgres_pool_size,
        postgres_hnsw_m=settings.postgres_hnsw_m,
        postgres_hnsw_ef_construction=settings.postgres_hnsw_ef_construction,
        postgres_hnsw_ef_search=settings.postgres_hnsw_ef_search,
        postgres_index_threshold=settings.postgres_index_threshold,
    )


@dataclass
class Assembly:
    components: list[Component]
    modules: list[Module]
    stores: StoreProvider | None
    # The HTTP gateway (its bound port once started), when the target runs it.
    gateway: HttpGateway | None = None


def assemble(target: Target, deps: Deps) -> Assembly:
    """The components of a target and the modules they share."""
    names = [name for name in ORDER if target in ("all", name)]
    if target == "gateway" and not deps.settings.gateway_upstream_addr:
        raise ConfigError("--target gateway needs MMSEARCH_GATEWAY_UPSTREAM_ADDR (the services it fronts)")
    stores = StoreProvider(store_settings(deps.settings)) if any(n in WITH_STORE for n in names) else None
    components = []
    gateway = None
    for name in names:
        if name == "gateway":
            component, gateway = build_gateway(deps)
            components.append(component)
        elif name in WITH_STORE:
            assert stores is not None
            components.append(WITH_STORE[name](deps, stores))
        else:
            components.append(STATELESS[name](deps))
    return Assembly(components, [stores] if stores is not None else [], stores, gateway)


async def start_target(
    settings: Settings,
    target: Target,
    *,
    registry: CollectorRegistry,
    tracer_provider: TracerProvider | None = None,
    serve_metrics: bool = True,
) -> tuple[RunningServer, Assembly]:
    assembly = assemble(target, Deps(settings, registry, tracer_provider))
    running = await start_server(
        settings,
        assembly.components,
        registry=registry,
        tracer_provider=tracer_provider,
        serve_metrics=serve_metrics,
        modules=assembly.modules,
        translate=edge.translate,
    )
    return running, assembly
