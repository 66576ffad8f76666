"""Recent dead letters, kept in memory for IndexerAdmin.ListDeadLetters (the
console's dead-letter browser): a summary per letter, without the original
bytes, attributed to the tenant the original record's key names."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from mmsearch.v1 import events_pb2, indexer_pb2

KEEP = 1000


@dataclass(frozen=True)
class Recent:
    tenant: str
    summary: indexer_pb2.DeadLetterSummary


def summarize(letter: events_pb2.DeadLetter) -> Recent:
    # Keys are "tenant/item_id" (mmsearch.producer); a poison record may carry anything.
    tenant, _, item_id = letter.original_key.decode("utf-8", "replace").partition("/")
    summary = indexer_pb2.DeadLetterSummary(
        reason=events_pb2.DeadLetter.Reason.Name(letter.reason),
        detail=letter.detail[:2000],
        event_id=_event_id(letter),
        item_id=item_id[:512],
        topic=letter.topic,
        partition=letter.partition,
        offset=letter.offset,
        original_size=letter.original_value_bytes,
    )
    summary.dead_lettered_at.CopyFrom(letter.dead_lettered_at)
    return Recent(tenant, summary)


def _event_id(letter: events_pb2.DeadLetter) -> str:
    value = letter.original_value
    if not value:
        return ""
    try:
        event = events_pb2.ContentEvent.FromString(value)
        if event.event_id:
            return event.event_id[:256]
    except (DecodeError, RecursionError):
        pass
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        return ""
    found = decoded.get("eventId", decoded.get("event_id", "")) if isinstance(decoded, dict) else ""
    return found[:256] if isinstance(found, str) else ""


class RecentLetters:
    def __init__(self, keep: int = KEEP) -> None:
        self._letters: deque[Recent] = deque(maxlen=keep)

    def add(self, letter: events_pb2.DeadLetter) -> None:
        self._letters.append(summarize(letter))

    def of_tenant(self, tenant: str, limit: int) -> list[indexer_pb2.DeadLetterSummary]:
        """Newest first."""
        found = []
        for recent in reversed(self._letters):
            if recent.tenant == tenant:
                found.append(recent.summary)
                if len(found) >= limit:
                    break
        return found
