"""What flows between the indexer's stages: Kafka records in, a batch result
(writes accounted, dead letters to publish) out."""

from __future__ import annotations

import hashlib
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
    # (record, space id) of each written image whose OCR text the enrichment stage adds.
    followups: list[tuple[Record, str]] = field(default_factory=list)

    def merge(self, other: BatchResult) -> None:
        self.dead_letters += other.dead_letters
        self.indexed += other.indexed
        self.deleted += other.deleted
        self.duplicates += other.duplicates
        self.applied += other.applied
        self.followups += other.followups


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
    value = record.value or b""
    letter.original_value_bytes = len(value)
    letter.original_value_sha256 = hashlib.sha256(value).hexdigest()
    return letter


def fit(letter: events_pb2.DeadLetter, max_bytes: int) -> events_pb2.DeadLetter:
    """The letter within the DLQ's record size limit: the original value, then
    the headers, then most of the detail are left out as needed (marked), so an
    event of any size can always be dead-lettered and never stops a partition."""
    if letter.ByteSize() <= max_bytes:
        return letter
    fitted = events_pb2.DeadLetter()
    fitted.CopyFrom(letter)
    fitted.original_omitted = True
    fitted.ClearField("original_value")
    if fitted.ByteSize() > max_bytes:
        fitted.ClearField("original_headers")
    if fitted.ByteSize() > max_bytes:
        fitted.detail = fitted.detail[:1024]
        fitted.original_key = fitted.original_key[:1024]
    return fitted
