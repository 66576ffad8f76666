"""Index builds of the embedded store run in a child process over a copy (issue #11, item 1).

What is held here: the serving process keeps answering while a build runs (the event loop never
stalls for the build), searches keep their results through the build and the swap, writes made
during a build are in the built shard, a builder that crashes or is killed changes nothing, and a
serving process that dies mid-build leaves the collection as it was, leftovers removed at the next
open. Vectors: 384-d unit vectors drawn from a mixture of clusters (as bench/store_scale.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from mmsearch.stores.base import Collection, ItemRecord, Query, StoreHit
from mmsearch.stores.errors import StoreUnavailable
from mmsearch.stores.qdrant_edge import QdrantEdgeStore

DIM = 384
TENANT = "acme"
NAME = "docs_1"
ROOT = Path(__file__).resolve().parents[2]
# A real builder, started late: the test gets a window in which the build is surely running.
SLOW_BUILDER = (
    sys.executable,
    "-c",
    "import runpy, sys, time; time.sleep(float(__import__('os').environ.get('BUILD_DELAY', '1.5')));"
    " sys.argv = ['edge_build', *sys.argv[1:]];"
    " runpy.run_module('mmsearch.stores.edge_build', run_name='__main__')",
)


def clustered(n: int, seed: int, clusters: int = 40) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(1).standard_normal((clusters, DIM)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = centers[rng.integers(0, clusters, n)] + rng.standard_normal((n, DIM)).astype(np.float32) * 0.04
    return np.asarray(out / np.linalg.norm(out, axis=1, keepdims=True), dtype=np.float32)


def records(vectors: npt.NDArray[np.float32], prefix: str) -> list[ItemRecord]:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    return [
        ItemRecord(
            tenant=TENANT,
            item_id=f"{prefix}{i}",
            modality="text",
            vector=v,
            version=1,
            event_time=now,
            content_sha256=f"{prefix}{i}",
            text=f"document {prefix}{i}",
            tags=("red",) if i % 3 == 0 else ("blue",),
        )
        for i, v in enumerate(vectors)
    ]


async def filled(root: Path, n: int, **options: object) -> tuple[QdrantEdgeStore, list[ItemRecord]]:
    # Tiny thresholds: the graph is built (not left as a plain segment) even at a few thousand points.
    store = QdrantEdgeStore(root, full_scan_threshold_kb=16, indexing_threshold_kb=1, **options)  # type: ignore[arg-type]
    await store.ensure_collection(Collection(NAME, "docs@1", DIM))
    data = records(clustered(n, seed=7), "d")
    for start in range(0, n, 1000):
        await store.write(NAME, data[start : start + 1000])
    return store, data


def ids(hits: Sequence[StoreHit]) -> list[str]:
    return [h.record.item_id for h in hits]


async def builder_pid(store: QdrantEdgeStore) -> int:
    """The builder's pid once the build's process runs (bounded wait: 10 s)."""
    for _ in range(500):
        pid = store.building_pid(NAME)
        if pid is not None:
            return pid
        await asyncio.sleep(0.02)
    raise AssertionError("no build started")


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in (root / NAME).iterdir() if p.name.startswith((".build-", "shard-")))


async def test_a_build_does_not_stall_the_serving_process(tmp_path: Path) -> None:
    store, _ = await filled(tmp_path, 8000)
    try:
        gaps: list[float] = []
        done = asyncio.Event()

        async def heartbeat() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        started = time.perf_counter()
        assert await store.optimize(NAME)
        build_s = time.perf_counter() - started
        done.set()
        await beat
        assert (await store.info(NAME))["indexed_vectors"] == 8000
        # In-process, optimize() holds the GIL: the loop would stall for the whole build. Out of
        # process, what is left is loading the built shard at the swap (EdgeShard.load keeps the
        # GIL too: ~0.1-0.8 s here, depending on the machine's load), and nothing else long.
        assert build_s > 1.0, f"build too short ({build_s:.2f} s) to show anything"
        # (A loaded machine deschedules the process too: short stalls add up, none is the build.)
        stalled = sum(g for g in gaps if g > 0.1)
        assert max(gaps) < build_s / 4, f"event loop stalled {max(gaps):.2f} s of {build_s:.2f} s"
        assert stalled < build_s / 2, f"stalls of {stalled:.2f} s in all during a {build_s:.2f} s build"
    finally:
        await store.close()


async def test_searches_see_the_same_results_through_the_build_and_swap(tmp_path: Path) -> None:
    store, _ = await filled(tmp_path, 5000)
    try:
        queries = clustered(20, seed=99)
        expected = [
            ids(await store.search(NAME, Query(TENANT, limit=10, vector=q, exact=True))) for q in queries
        ]
        build = asyncio.create_task(store.optimize(NAME))
        rounds, errors = 0, []
        while not build.done():
            for q, want in zip(queries, expected, strict=True):
                try:
                    got = ids(await store.search(NAME, Query(TENANT, limit=10, vector=q)))
                except StoreUnavailable as exc:  # a search on a closed shard would land here
                    errors.append(str(exc))
                    continue
                assert len(set(got) & set(want)) >= 9, (got, want)
            rounds += 1
        assert await build
        assert not errors
        assert rounds >= 2, "no searches overlapped the build"
        assert (await store.info(NAME))["indexed_vectors"] == 5000
        for q, want in zip(queries, expected, strict=True):
            got = ids(await store.search(NAME, Query(TENANT, limit=10, vector=q)))
            assert len(set(got) & set(want)) >= 9
        assert leftovers(tmp_path) and len(leftovers(tmp_path)) == 1  # only the new live shard
        assert not (tmp_path / NAME / "shard").exists()  # the replaced one is gone
    finally:
        await store.close()


async def test_writes_during_a_build_are_in_the_built_shard(tmp_path: Path) -> None:
    store, data = await filled(tmp_path, 3000, builder_command=SLOW_BUILDER)
    try:
        build = asyncio.create_task(store.optimize(NAME))
        await builder_pid(store)
        late = records(clustered(200, seed=8), "late")
        await store.write(NAME, late)
        gone = replace(data[5], deleted=True, version=2, vector=None)
        await store.write(NAME, [gone])
        state = (await store.states(NAME, TENANT, [data[6].item_id]))[data[6].item_id]
        assert await store.set_text(NAME, TENANT, data[6].item_id, state, text="ocr text", snippet="ocr")
        assert store.building_pid(NAME) is not None, "the build ended before the writes"
        assert await build
        assert await store.count(NAME) == 3000 + 200 - 1
        hit = await store.search(NAME, Query(TENANT, limit=1, vector=late[17].vector))
        assert ids(hit) == [late[17].item_id]
        assert (await store.states(NAME, TENANT, [data[5].item_id]))[data[5].item_id].deleted
        assert data[5].item_id not in ids(
            await store.search(NAME, Query(TENANT, limit=5, vector=data[5].vector))
        )
        shown = await store.search(NAME, Query(TENANT, limit=1, vector=data[6].vector))
        assert shown[0].record.text == "ocr text"
    finally:
        await store.close()
    # And after a restart: the swap was durable (collection.json names the built shard).
    again = QdrantEdgeStore(tmp_path)
    try:
        assert await again.count(NAME) == 3199
        assert (await again.info(NAME))["indexed_vectors"] >= 3000
    finally:
        await again.close()


@pytest.mark.parametrize("how", ["crash", "kill"])
async def test_a_failed_builder_changes_nothing(tmp_path: Path, how: str) -> None:
    builder = (sys.executable, "-c", "import os; os.abort()") if how == "crash" else SLOW_BUILDER
    store, data = await filled(tmp_path, 2000, builder_command=builder)
    try:
        before = (await store.info(NAME))["indexed_vectors"]
        build = asyncio.create_task(store.optimize(NAME))
        if how == "kill":
            os.kill(await builder_pid(store), signal.SIGKILL)
        with pytest.raises(StoreUnavailable, match="builder exited with -"):
            await build
        assert leftovers(tmp_path) == []
        assert (await store.info(NAME))["indexed_vectors"] == before
        await store.write(NAME, records(clustered(10, seed=3), "after"))
        assert await store.count(NAME) == 2010
        hit = await store.search(NAME, Query(TENANT, limit=1, vector=data[42].vector))
        assert ids(hit) == [data[42].item_id]
    finally:
        await store.close()


async def test_a_serving_process_killed_mid_build_leaves_the_collection_intact(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.contract.test_qdrant_edge_build import builder_pid, filled, NAME, SLOW_BUILDER
        async def main():
            store, _ = await filled(__import__("pathlib").Path({str(tmp_path)!r}), 1500,
                                    builder_command=SLOW_BUILDER)
            task = asyncio.create_task(store.optimize(NAME))
            await builder_pid(store)
            print("building", flush=True)
            await task
        asyncio.run(main())
        """
    )
    env = {**os.environ, "BUILD_DELAY": "30"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, env=env, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"building"
        assert any(p.startswith(".build-") for p in leftovers(tmp_path))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its builder, as an OOM kill would
        await proc.wait()
    store = QdrantEdgeStore(tmp_path)
    try:
        assert await store.count(NAME) == 1500
        assert leftovers(tmp_path) == []
        assert (tmp_path / NAME / "shard").is_dir()
    finally:
        await store.close()


async def test_enough_unindexed_points_start_a_background_build(tmp_path: Path) -> None:
    store, _ = await filled(tmp_path, 1000, auto_optimize_points=1500)
    try:
        assert (await store.info(NAME))["building"] == 0
        await store.write(NAME, records(clustered(600, seed=4), "more"))  # 1600 unindexed
        handle = store._open[NAME]
        assert handle.build_task is not None
        assert await handle.build_task
        info = await store.info(NAME)
        assert info["indexed_vectors"] == 1600 and info["building"] == 0
    finally:
        await store.close()


async def test_the_services_start_builds_from_their_settings(tmp_path: Path) -> None:
    from mmsearch.kit.config import load_settings
    from mmsearch.modules import store_settings
    from mmsearch.stores.provider import StoreProvider

    env = {"MMSEARCH_STORE_DIR": str(tmp_path)}
    assert load_settings(env).store_build_unindexed_points == 20_000  # on by default
    settings = store_settings(load_settings({**env, "MMSEARCH_STORE_BUILD_UNINDEXED_POINTS": "1234"}))
    provider = StoreProvider(settings)
    store = await provider.get()
    assert isinstance(store, QdrantEdgeStore) and store._auto_optimize == 1234
    await provider.close()
    off = StoreProvider(store_settings(load_settings({**env, "MMSEARCH_STORE_BUILD_UNINDEXED_POINTS": "0"})))
    assert (await off.get())._auto_optimize is None  # type: ignore[attr-defined]
    await off.close()
