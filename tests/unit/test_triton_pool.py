"""TritonPool's scheduling parameters against a fake tritonclient: each request
carries its priority and its remaining time as Triton's queue timeout, and
requests in flight are bounded per model and priority class."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from mmsearch.clients.errors import DependencyDeadline
from mmsearch.clients.priority import priority_from_metadata
from mmsearch.clients.triton import ModelInfo, TritonMetrics, TritonPool, map_triton_error


class FakeResult:
    def __init__(self, rows: int) -> None:
        self._rows = rows

    def get_response(self) -> Any:
        return type("Response", (), {"model_version": "1"})()

    def as_numpy(self, name: str) -> np.ndarray:
        return np.zeros((self._rows, 2), dtype=np.float32)


class FakeClient:
    """Records every infer call; holds each one until `release` is set."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.in_flight = 0
        self.peak: dict[int, int] = {}  # priority -> peak concurrent calls
        self.release = asyncio.Event()
        self.release.set()
        self._by_priority: dict[int, int] = {}

    async def infer(self, model: str, inputs: list[Any], **kwargs: Any) -> FakeResult:
        self.calls.append({"model": model, **kwargs})
        level = int(kwargs["priority"])
        self._by_priority[level] = self._by_priority.get(level, 0) + 1
        self.peak[level] = max(self.peak.get(level, 0), self._by_priority[level])
        try:
            await self.release.wait()
        finally:
            self._by_priority[level] -= 1
        return FakeResult(inputs[0].shape()[0])

    async def close(self) -> None:
        pass


def make_pool(max_in_flight: int = 16, max_batch_size: int = 4) -> tuple[TritonPool, FakeClient]:
    pool = TritonPool(
        "127.0.0.1:1",
        10.0,
        pool_size=1,
        retries=0,
        metrics=TritonMetrics(CollectorRegistry(), "test"),
        max_in_flight=max_in_flight,
    )
    fake = FakeClient()
    pool._clients = [fake]  # type: ignore[list-item]
    pool._info["m"] = ModelInfo("m", "1", max_batch_size, True)
    return pool, fake


def rows(n: int) -> dict[str, np.ndarray]:
    return {"X": np.zeros((n, 1), dtype=np.float32)}


async def test_each_request_carries_priority_and_remaining_time_as_queue_timeout() -> None:
    pool, fake = make_pool()
    deadline = time.monotonic() + 2.0
    await pool.infer_batch("m", rows(3), ("Y",), deadline, "text")
    await pool.infer_batch("m", rows(9), ("Y",), deadline, "text", priority="bulk")
    first, *bulk = fake.calls
    assert first["priority"] == 1
    assert [c["priority"] for c in bulk] == [2, 2, 2]  # 9 rows in chunks of 4
    for call in fake.calls:
        # Triton's timeout is in microseconds and matches the client-side deadline.
        assert 1_500_000 < call["timeout"] <= 2_000_000
        assert call["timeout"] == pytest.approx(call["client_timeout"] * 1e6, rel=0.01)


async def test_in_flight_requests_are_bounded_per_model_and_priority() -> None:
    pool, fake = make_pool(max_in_flight=2, max_batch_size=1)
    fake.release.clear()
    deadline = time.monotonic() + 5.0
    bulk = asyncio.create_task(pool.infer_batch("m", rows(10), ("Y",), deadline, "text", priority="bulk"))
    await asyncio.sleep(0.05)
    assert len(fake.calls) == 2  # the other 8 chunks wait in the process
    # Interactive work has its own slots: it is not stuck behind bulk in the pool.
    interactive = asyncio.create_task(pool.infer_batch("m", rows(1), ("Y",), deadline, "text"))
    await asyncio.sleep(0.05)
    assert [c["priority"] for c in fake.calls] == [2, 2, 1]
    fake.release.set()
    await asyncio.gather(bulk, interactive)
    assert len(fake.calls) == 11
    assert fake.peak == {2: 2, 1: 1}


async def test_waiting_for_a_slot_ends_at_the_deadline() -> None:
    pool, fake = make_pool(max_in_flight=1, max_batch_size=1)
    fake.release.clear()
    holder = asyncio.create_task(
        pool.infer_one("m", rows(1), ("Y",), time.monotonic() + 5, "text", priority="bulk")
    )
    await asyncio.sleep(0.02)
    with pytest.raises(DependencyDeadline):
        await pool.infer_one("m", rows(1), ("Y",), time.monotonic() + 0.1, "text", priority="bulk")
    assert len(fake.calls) == 1  # the late request was never sent
    fake.release.set()
    await holder
    # The slot the timed-out waiter never got is not lost.
    await pool.infer_one("m", rows(1), ("Y",), time.monotonic() + 1, "text", priority="bulk")
    assert len(fake.calls) == 2


def test_an_expired_request_is_a_deadline_not_an_outage() -> None:
    exc = InferenceServerException("Request timeout expired", status="StatusCode.UNAVAILABLE")
    assert isinstance(map_triton_error(exc, "m"), DependencyDeadline)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (None, "interactive"),
        ([("authorization", "Bearer x")], "interactive"),
        ([("x-mmsearch-priority", "bulk")], "bulk"),
        ([("X-MMSearch-Priority", b" BULK ")], "bulk"),
        ([("x-mmsearch-priority", "high")], "interactive"),
    ],
)
def test_priority_header(metadata: Any, expected: str) -> None:
    assert priority_from_metadata(metadata) == expected
