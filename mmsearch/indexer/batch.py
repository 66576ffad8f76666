"""What flows between the indexer's stages: Kafka records in, a batch result
(writes accounted, dead letters to publish) out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from mmsearch.v1 import events_pb2

REASON = events_pb2.DeadLetter


@dataclass(frozen=True)
class Record:
    """A Kafka record as the pipeline sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0


@dataclass
class BatchResult:
    dead_letters: list[events_pb2.DeadLetter] = field(default_factory=list)
    indexed: int = 0
    deleted: int = 0
    duplicates: int = 0
    # (space id, event time) of each applied event, for freshness.
    applied: list[tuple[str, datetime]] = field(default_factory=list)

    def merge(self, other: BatchResult) -> None:
        self.dead_letters += other.dead_letters
        self.indexed += other.indexed
        self.deleted += other.deleted
        self.duplicates += other.duplicates
        self.applied += other.applied


def dead_letter(
    record: Record, reason: events_pb2.DeadLetter.Reason.ValueType, detail: str
) -> events_pb2.DeadLetter:
    letter = events_pb2.DeadLetter(
        reason=reason,
        detail=detail,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        original_key=record.key or b"",
        original_value=record.value or b"",
        original_headers=[events_pb2.RecordHeader(key=k, value=v) for k, v in record.headers],
    )
    letter.dead_lettered_at.FromDatetime(datetime.now(UTC))
    return letter
