"""A record the embedder keeps failing on (an error, not "down") cannot pin its
partition: after a few failed attempts the batch's records are tried alone and
the failing one is dead-lettered; when every record fails alone, nothing is
dead-lettered (the dependency is broken, not the records)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from mmsearch.clients.errors import DependencyDown, DependencyError
from mmsearch.indexer.batch import REASON, BatchResult, Record
from mmsearch.indexer.consumer import ConsumerConfig, IndexerConsumer
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
