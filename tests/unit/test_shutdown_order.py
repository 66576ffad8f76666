"""Shutdown order of a server: drains while the server still serves, then the
server stops, then components' stop hooks, then shared modules (the store),
last opened first. A module is never closed while a component still uses it."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from mmsearch.kit.component import Component, Deps
from mmsearch.kit.config import ConfigError
from mmsearch.kit.server import start_server
from mmsearch.modules import assemble
from tests.conftest import make_settings


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    def component(self, name: str) -> Component:
        async def drain() -> None:
            self.events.append(f"drain {name}")

        async def stop() -> None:
            self.events.append(f"stop {name}")

        return Component(
            name=name,
            service_name=f"test.{name}",
            register=lambda server: None,
            method_roles={},
            drain=drain,
            stop=stop,
        )

    async def close(self) -> None:
        self.events.append("close store")


async def test_drain_then_server_then_stop_hooks_then_modules() -> None:
    recorder = Recorder()
    running = await start_server(
        make_settings(),
        [recorder.component("searcher"), recorder.component("indexer")],
        registry=CollectorRegistry(),
        serve_metrics=False,
        modules=[recorder],
    )
    original_stop = running.server.stop

    async def stop_server(grace: float | None) -> None:
        recorder.events.append("server stopped")
        await original_stop(grace)

    running.server.stop = stop_server  # type: ignore[method-assign]
    await running.stop()
    assert recorder.events == [
        "drain indexer",
        "drain searcher",
        "server stopped",
        "stop indexer",
        "stop searcher",
        "close store",
    ]


async def test_indexer_and_searcher_share_one_store_module_that_neither_closes() -> None:
    assembly = assemble("all", Deps(make_settings(), CollectorRegistry()))
    # The gateway starts last, so it drains first (no new HTTP requests while the rest drain).
    assert [c.name for c in assembly.components] == ["embedder", "reranker", "searcher", "indexer", "gateway"]
    assert assembly.modules == [assembly.stores] and assembly.stores is not None
    store = await assembly.stores.get()
    for component in assembly.components:
        if component.name in ("searcher", "indexer"):
            assert component.stop is not None
            await component.stop()
    assert await store.resolve("default") is None  # still open: "the store is closed" would raise
    await assembly.stores.close()
    assert assemble("embedder", Deps(make_settings(), CollectorRegistry())).modules == []
    gateway = assemble(
        "gateway", Deps(make_settings(gateway_upstream_addr="127.0.0.1:1"), CollectorRegistry())
    )
    assert [c.name for c in gateway.components] == ["gateway"] and gateway.modules == []
    with pytest.raises(ConfigError, match="MMSEARCH_GATEWAY_UPSTREAM_ADDR"):
        assemble("gateway", Deps(make_settings(), CollectorRegistry()))
