"""The dead-letter browser's summaries: attributed to the tenant the record's key
names, the event id read from protobuf or JSON, never the original bytes, and a
tenant sees only its own letters, newest first, within the bound kept."""

from __future__ import annotations

from google.protobuf import json_format

from mmsearch.indexer.batch import REASON, Record, dead_letter
from mmsearch.indexer.letters import RecentLetters
from mmsearch.producer import text_event


def record(key: bytes, value: bytes, offset: int) -> Record:
    return Record(topic="content.v1", partition=1, offset=offset, key=key, value=value, headers=())


def test_letters_are_summarized_per_tenant_newest_first() -> None:
    recent = RecentLetters(keep=3)
    proto = text_event("acme", "doc-1", "x" * 5000)
    as_json = text_event("acme", "doc-2", "y")
    recent.add(
        dead_letter(record(b"acme/doc-1", proto.SerializeToString(), 1), REASON.REASON_OVER_LIMIT, "big")
    )
    recent.add(dead_letter(record(b"other/doc-9", b"\x00garbage", 2), REASON.REASON_UNDECODABLE, "bad bytes"))
    value = json_format.MessageToJson(as_json).encode()
    recent.add(dead_letter(record(b"acme/doc-2", value, 3), REASON.REASON_INVALID_EVENT, "no modality"))
    letters = recent.of_tenant("acme", 10)
    assert [(s.item_id, s.reason, s.event_id) for s in letters] == [
        ("doc-2", "REASON_INVALID_EVENT", as_json.event_id),
        ("doc-1", "REASON_OVER_LIMIT", proto.event_id),
    ]
    assert letters[1].original_size == len(proto.SerializeToString()) and letters[1].offset == 1
    assert not hasattr(letters[0], "original_value")  # the browser never carries the bytes
    assert [s.event_id for s in recent.of_tenant("other", 10)] == [""]
    assert recent.of_tenant("acme", 1)[0].item_id == "doc-2"
    # Only the last `keep` letters are kept.
    recent.add(dead_letter(record(b"acme/doc-3", b"", 4), REASON.REASON_INVALID_EVENT, "empty"))
    assert [s.item_id for s in recent.of_tenant("acme", 10)] == ["doc-3", "doc-2"]
