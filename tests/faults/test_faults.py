"""Fault suite (issue #12): each run publishes a known realistic workload to a durable broker,
breaks one part while it is ingested, and ends with an item-by-item audit of the store: zero
lost, zero duplicated, zero cross-tenant hits, no dead letters; recovery times are recorded
(tests/faults/scenarios.py). `make faults` runs all; `make test` only the short one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.faults import scenarios as s
from tests.faults.rig import Topology
from tests.faults.workload import Workload, build

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

FULL_DOCS = (60, 20)


def check(row: dict[str, Any]) -> None:
    assert row["lost"] == 0 and row["duplicated"] == 0, row
    assert row["resurrected"] == 0 and row["foreign"] == 0, row
    assert row["dead_letters"] == 0, row
    if "tenancy" in row:
        assert row["tenancy"]["cross_tenant_hits"] == 0, row
        assert row["tenancy"]["owner_found"] == row["tenancy"]["queries"] // 2, row


@pytest.fixture(scope="module")
def full_workload() -> Workload:
    return build(FULL_DOCS)


async def test_short_kill_service_and_broker(tmp_path: Path) -> None:
    """CI's short run: kill -9 of `mmsearch serve --target all`, then of the broker."""
    row = await s.run(
        "short: kill -9 all, then broker",
        tmp_path,
        "all",
        s.sequence(s.kill_service("all"), s.kill_broker),
        build((40, 10), media=3),
    )
    check(row)


FULL: list[tuple[str, Topology, s.Fault]] = [
    ("kill -9 embedder", "split", s.kill_service("embedder")),
    ("kill -9 reranker", "split", s.kill_service("reranker")),
    ("kill -9 indexer", "split", s.kill_service("indexer")),
    ("kill -9 all", "all", s.kill_service("all")),
    ("kill -9 store owner x3 (embedded store)", "all", s.kill_service("all", times=3)),
    ("kill -9 triton", "all", s.kill_triton),
    ("kill -9 triton stubs", "all", s.kill_triton_stubs),
    ("kill -9 broker", "all", s.kill_broker),
    ("broker partition", "all", s.partition_broker),
    ("slow triton", "all", s.slow("triton")),
    ("slow broker", "all", s.slow("broker")),
]


@pytest.mark.full_faults
@pytest.mark.parametrize(("name", "topology", "fault"), FULL, ids=[f[0] for f in FULL])
async def test_fault(
    name: str, topology: Topology, fault: s.Fault, full_workload: Workload, tmp_path: Path
) -> None:
    check(await s.run(name, tmp_path, topology, fault, full_workload))
