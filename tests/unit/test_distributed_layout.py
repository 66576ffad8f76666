"""The distributed layout's wiring, without starting anything: every replica on its own ports,
pointed at the one embedder and reranker, the shared store and page-token key; the local stack's
fixed ports (searcher-1 answers on the stack's own port) never collide."""

from __future__ import annotations

from pathlib import Path

from mmsearch.dev.distributed import LAYOUT, Ports, replica_settings
from mmsearch.dev.stack import DISTRIBUTED_PARTS, StackConfig, _part_ports, _replica_ports
from mmsearch.kit.config import load_settings
from mmsearch.modules import store_settings


def test_replica_settings_wire_the_services_together(tmp_path: Path) -> None:
    ports = {name: Ports(40000 + i, 41000 + i) for i, (name, _) in enumerate(LAYOUT)}
    dsn = "postgresql://postgres@127.0.0.1:5999/postgres"
    every = {
        name: replica_settings(
            name,
            ports,
            work_dir=tmp_path,
            triton_url="127.0.0.1:8001",
            bootstrap="127.0.0.1:9092",
            postgres_dsn=dsn,
            page_token_key="k" * 32,
        )
        for name, _ in LAYOUT
    }
    assert sorted(t for _, t in LAYOUT) == [
        "embedder",
        "indexer",
        "indexer",
        "reranker",
        "searcher",
        "searcher",
    ]
    assert len({s["MMSEARCH_GRPC_PORT"] for s in every.values()}) == len(LAYOUT)
    assert len({s["MMSEARCH_STORE_DIR"] for s in every.values()}) == len(LAYOUT)
    for settings in every.values():
        assert settings["MMSEARCH_SEARCHER_EMBEDDER_ADDR"] == f"127.0.0.1:{ports['embedder'].grpc}"
        assert settings["MMSEARCH_INDEXER_RERANKER_ADDR"] == f"127.0.0.1:{ports['reranker'].grpc}"
        # Each is a valid service configuration that opens the shared PostgreSQL store.
        assert store_settings(load_settings(settings)).postgres_dsn == dsn
    assert len({s["MMSEARCH_SEARCH_PAGE_TOKEN_KEY"] for s in every.values()}) == 1


def test_stack_ports_do_not_collide_and_searcher_1_takes_the_stack_port() -> None:
    config = StackConfig.from_env(distributed=True)
    assert _replica_ports(config)["searcher-1"].grpc == config.grpc_port
    taken = [port for name in DISTRIBUTED_PARTS for port in _part_ports(config, name)]
    assert len(taken) == len(set(taken)), sorted(taken)
