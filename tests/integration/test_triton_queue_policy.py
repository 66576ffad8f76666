"""No work that nobody waits for (issue #10): a request whose deadline passes
while it waits in Triton's queue behind a busy model is rejected by Triton, not
executed, as Triton's own metrics show."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from mmsearch.clients.errors import DependencyDeadline
from mmsearch.clients.triton import TritonMetrics, TritonPool
from mmsearch.dev.metrics_scrape import scrape, subtract, total
from tests.conftest import TritonHandle

pytestmark = pytest.mark.integration
MODEL = "minilm_l6_text"
OUTPUTS = ("EMBEDDING", "TOKENS", "TRUNCATED")


def texts(values: list[str]) -> dict[str, np.ndarray]:
    return {"TEXT": np.array([[v.encode()] for v in values], dtype=np.object_)}


async def test_requests_that_expire_in_the_queue_are_rejected_not_executed(triton: TritonHandle) -> None:
    pool = TritonPool(
        triton.grpc_url, 60.0, pool_size=2, retries=2, metrics=TritonMetrics(CollectorRegistry(), "test")
    )
    try:
        # Warm the model so its first-call costs are not inside the measured window.
        await pool.infer_one(MODEL, texts(["warm up"]), OUTPUTS, time.monotonic() + 30, "text")
        before = scrape(triton.metrics_url)
        # Keep the one instance busy for a while with bulk work nobody cancels...
        long_text = " ".join(f"paragraph{i} of a long document about queues" for i in range(40))
        busy_rows = 2 * 64
        busy = [
            asyncio.create_task(
                pool.infer_one(
                    MODEL, texts([long_text] * 64), OUTPUTS, time.monotonic() + 60, "text", priority="bulk"
                )
            )
            for _ in range(2)
        ]
        await asyncio.sleep(0.2)
        # ...then send requests whose callers give up after 30 ms, even at high priority.
        expired = 12
        results = await asyncio.gather(
            *(
                pool.infer_one(MODEL, texts([f"query {i}"]), OUTPUTS, time.monotonic() + 0.03, "text")
                for i in range(expired)
            ),
            return_exceptions=True,
        )
        assert all(isinstance(r, DependencyDeadline) for r in results), results
        await asyncio.gather(*busy)
        # Triton updates its counters after a response is sent (the client may see the
        # answer first, on a busy machine by a lot); give both counters a moment.
        for _ in range(100):
            delta = subtract(scrape(triton.metrics_url), before)
            if (
                total(delta, "nv_inference_request_failure_total", model=MODEL) >= expired
                and total(delta, "nv_inference_request_success_total", model=MODEL) >= 2
            ):
                break
            await asyncio.sleep(0.1)
    finally:
        await pool.close()
    assert total(delta, "nv_inference_request_success_total", model=MODEL) == 2
    assert total(delta, "nv_inference_request_failure_total", model=MODEL) == expired
    # The rows Triton ran are exactly the busy work's: none of the expired requests ran.
    assert total(delta, "nv_inference_count_total", model=MODEL) == busy_rows
    assert total(delta, "nv_inference_exec_count_total", model=MODEL) <= 2
