"""Ingest always makes progress: a deliberately slow text model (it sleeps per
word, as a real encoder on busy cores facing long documents does) and short
work-derived deadlines. The indexer splits calls past their deadline and
commits every event: no batch retried forever, nothing dead-lettered; the
calls it gave up on are rejected in Triton's queue, not executed."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from mmsearch.dev.metrics_scrape import scrape, subtract, total
from mmsearch.producer import text_event
from mmsearch.stores.base import collection_name
from tests.conftest import BrokerHandle, TritonHandle, start_test_triton
from tests.integration.test_indexer import publish, start_indexing

pytestmark = pytest.mark.integration
MODELS = Path(__file__).resolve().parents[1] / "models"
DOCUMENTS = 24
WORDS = 60  # 60 words x 8 ms: 0.5 s of model time per document


@pytest.fixture
def slow_triton(tmp_path: Path) -> Iterator[TritonHandle]:
    repository = tmp_path / "repository"
    shutil.copytree(MODELS / "slow_text", repository / "slow_text")
    handle = start_test_triton(tmp_path, ("slow_text",), repository=repository)
    yield handle
    handle.stop()


def spaces_file(tmp_path: Path) -> Path:
    path = tmp_path / "spaces.json"
    encoder = {"modality": "text", "model": "slow_text", "preprocessing": "whitespace;slow-test"}
    spaces = {
        "spaces": [
            {"name": "slow", "version": 1, "dimension": 384, "encoders": [encoder], "aliases": ["default"]}
        ]
    }
    path.write_text(json.dumps(spaces))
    return path


def counter(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    return float(value or 0.0)


async def test_a_slow_model_and_short_deadlines_still_commit_everything(
    slow_triton: TritonHandle, broker: BrokerHandle, tmp_path: Path
) -> None:
    rng = random.Random(7)
    vocabulary = [f"word{i}" for i in range(500)]
    events = [
        text_event(
            "acme",
            f"doc-{i}",
            " ".join(rng.choices(vocabulary, k=WORDS)),
            event_time=datetime(2026, 6, 1, tzinfo=UTC),
        )
        for i in range(DOCUMENTS)
    ]
    # A whole batch's estimated work gets ~2.5 s while the model needs ~12 s: only
    # calls of one or two documents fit their deadlines.
    indexing = await start_indexing(
        slow_triton,
        broker,
        spaces_file=spaces_file(tmp_path),
        text_model="slow_text",
        indexer_batch_size=DOCUMENTS,
        indexer_embed_base_timeout_s=0.5,
        indexer_embed_seconds_per_1k_tokens=1.0,
        indexer_embed_timeout_s=20.0,
        triton_timeout_s=60.0,
    )
    try:
        before = scrape(slow_triton.metrics_url)
        produced = publish(indexing.bootstrap, indexing.topic, events)
        status = await indexing.wait_caught_up(produced, timeout_s=240)
        delta = subtract(scrape(slow_triton.metrics_url), before)
        # Calls the indexer gave up on (and split) were rejected in Triton's queue, not run.
        assert total(delta, "nv_inference_request_failure_total", model="slow_text") > 0
        assert not status.dead_letters_by_reason
        registry = indexing.service.registry
        assert counter(registry, "mmsearch_indexer_embed_splits_total") > 0
        assert counter(registry, "mmsearch_indexer_batch_retries_total") == 0
        assert indexing.service.stores is not None
        store = await indexing.service.stores.get()
        assert await store.count(collection_name("slow@1"), "acme") == DOCUMENTS
    finally:
        await indexing.service.running.stop()
