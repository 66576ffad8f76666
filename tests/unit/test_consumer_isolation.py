"""A record the embedder keeps failing on (an error, not "down") cannot pin its
partition: after a few failed attempts the batch's records are tried alone and
the failing one is dead-lettered; when every record fails alone, nothing is
dead-lettered (the dependency is broken, not the records)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from mmsearch.clients.errors import DependencyDown, DependencyError
from mmsearch.indexer.batch import REASON, BatchResult, Record
from mmsearch.indexer.consumer import ConsumerConfig, ConsumerState, IndexerConsumer
from mmsearch.indexer.metrics import IndexerMetrics


class PoisonPipeline:
    def __init__(self, poison: set[int], down: bool = False) -> None:
        self.poison = poison
        self.down = down

    async def process(self, records: Sequence[Record]) -> BatchResult:
        if self.down:
            raise DependencyDown("embedder", "UNAVAILABLE")
        if any(r.offset in self.poison for r in records):
            raise DependencyError("embedder", "INTERNAL: model crashed on this input")
        return BatchResult(indexed=len(records))


def consumer(pipeline: PoisonPipeline) -> IndexerConsumer:
    config = ConsumerConfig(bootstrap="127.0.0.1:1", topic="t", dlq_topic="t.dlq", group_id="g")
    return IndexerConsumer(config, pipeline, IndexerMetrics(CollectorRegistry()))  # type: ignore[arg-type]


RECORDS = [Record("t", 0, offset, b"k", b"v") for offset in range(5)]


async def test_the_record_that_fails_alone_is_dead_lettered_and_the_rest_indexed() -> None:
    result = await consumer(PoisonPipeline({3}))._isolate(RECORDS)
    assert result.indexed == 4
    assert [(d.offset, d.reason) for d in result.dead_letters] == [(3, REASON.REASON_UNPROCESSABLE)]


async def test_when_every_record_fails_alone_nothing_is_dead_lettered() -> None:
    with pytest.raises(DependencyError):
        await consumer(PoisonPipeline(set(range(5))))._isolate(RECORDS)


async def test_a_dependency_that_is_down_is_never_blamed_on_a_record() -> None:
    with pytest.raises(DependencyDown):
        await consumer(PoisonPipeline({3}, down=True))._isolate(RECORDS)


def test_a_held_consumer_yields_while_told_but_never_longer_than_its_bound() -> None:
    now = [0.0]
    busy = [True]
    config = ConsumerConfig(bootstrap="127.0.0.1:1", topic="t.enrich", dlq_topic="t.dlq", group_id="g.enrich")
    held = IndexerConsumer(
        config,
        PoisonPipeline(set()),  # type: ignore[arg-type]
        IndexerMetrics(CollectorRegistry()),
        hold=lambda: busy[0],
        max_hold_s=60.0,
        clock=lambda: now[0],
    )
    steps = []
    for t in range(0, 181, 10):  # ingest busy for three minutes
        now[0] = float(t)
        steps.append(held.holding())
    # Held from 0 to 50 s, one batch at 60 s, held again from 70 to 120 s, one at 130 s, ...
    assert [t for t, h in zip(range(0, 181, 10), steps, strict=True) if not h] == [60, 130]
    busy[0] = False
    assert not held.holding()


def test_a_consumer_is_busy_between_its_commit_and_its_next_poll() -> None:
    state = ConsumerState()
    state.highwater = state.committed = {("t", 0): 10}  # caught up, as seen at the last poll
    assert not state.busy()
    state.last_batch_at = time.monotonic()  # a batch just committed: more may be waiting
    assert state.busy()
