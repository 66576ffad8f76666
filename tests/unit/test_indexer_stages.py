"""Each indexer stage alone: plan (decode, resolve, newest per item), enrich
(embed, refuse one item, OCR best effort), write (skip what the store has)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from mmsearch.clients.errors import DependencyDown, InputRejected
from mmsearch.clients.priority import Priority
from mmsearch.clients.spaces import SpaceInfo
from mmsearch.indexer.batch import Record
from mmsearch.indexer.enrich import Enricher
from mmsearch.indexer.plan import Planner
from mmsearch.indexer.write import Writer, tombstone
from mmsearch.kit.passages import ChunkingPolicy
from mmsearch.producer import delete_event, media_event, text_event
from mmsearch.v1 import common_pb2, embedder_pb2, events_pb2
from tests.fakes import FakeEmbedder, MemoryStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TEXT_SPACE = SpaceInfo("minilm@1", 8, frozenset({"text", "image"}))
REASON = events_pb2.DeadLetter


class StaticResolver:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def resolve(self, name: str) -> SpaceInfo | None:
        self.calls.append(name)
        return {"default": TEXT_SPACE, "audio": SpaceInfo("aisfx@1", 8, frozenset({"audio"}))}.get(name)


def record(event: events_pb2.ContentEvent | bytes, offset: int) -> Record:
    value = event if isinstance(event, bytes) else event.SerializeToString()
    return Record("content.v1", 0, offset, b"k", value, (("content-type", b"application/x-protobuf"),))


async def test_plan_keeps_the_newest_event_per_item_and_dead_letters_the_rest() -> None:
    resolver = StaticResolver()
    records = [
        record(text_event("a", "doc", "old", version=1, event_time=T0), 0),
        record(text_event("a", "doc", "new", version=2, event_time=T0), 1),
        record(text_event("a", "other", "x", version=1, event_time=T0), 2),
        record(b"\xff not an event", 3),
        record(text_event("a", "odd", "x", space="nope@1", event_time=T0), 4),
    ]
    plan = await Planner(resolver).plan(records)
    (group,) = plan.groups.values()
    assert [(p.event.event.item_id, p.event.event.content.text) for p in group] == [
        ("doc", "new"),
        ("other", "x"),
    ]
    assert plan.duplicates == 1
    assert [d.offset for d in plan.dead_letters] == [3, 4]
    assert plan.dead_letters[1].reason == REASON.REASON_UNKNOWN_SPACE
    assert resolver.calls.count("default") == 1  # resolved once per batch


async def test_plan_sends_a_spaceless_delete_to_every_default_space() -> None:
    plan = await Planner(StaticResolver()).plan([record(delete_event("a", "doc", event_time=T0), 0)])
    assert sorted(space for space, _ in plan.groups) == ["aisfx@1", "minilm@1"]


async def test_enrich_dead_letters_a_refused_item_and_embeds_the_others() -> None:
    good = text_event("a", "doc", "a cat", event_time=T0)
    bad = media_event("a", "img", b"BAD bytes", common_pb2.MODALITY_IMAGE, event_time=T0)
    plan = await Planner(StaticResolver()).plan([record(good, 0), record(bad, 1)])
    (group,) = plan.groups.values()
    embedder = FakeEmbedder()
    enriched = await Enricher(embedder).enrich("minilm@1", group)
    assert [r.item_id for r in enriched.records] == ["doc"]
    # Ingest is bulk work: it queues behind searches at the model server.
    assert embedder.priorities and set(embedder.priorities) == {"bulk"}
    assert [(d.offset, d.reason) for d in enriched.dead_letters] == [(1, REASON.REASON_CORRUPT_MEDIA)]


class OcrRefusingEmbedder(FakeEmbedder):
    async def extract_text(
        self,
        images: Sequence[common_pb2.Media],
        timeout_s: float | None = None,
        *,
        priority: Priority = "interactive",
    ) -> list[embedder_pb2.ExtractedText]:
        raise InputRejected("embedder", "images[0]: too large for OCR", index=0, kind="over_limit")


async def test_enrich_keeps_an_image_whose_ocr_is_refused() -> None:
    from tests.unit.test_indexer_pipeline import png

    event = media_event("a", "img", png(), common_pb2.MODALITY_IMAGE, event_time=T0)
    plan = await Planner(StaticResolver()).plan([record(event, 0)])
    (group,) = plan.groups.values()
    enriched = await Enricher(OcrRefusingEmbedder()).enrich("minilm@1", group)
    (item,) = enriched.records
    assert item.modality == "image" and item.snippet == "" and item.thumbnail_jpeg


async def test_write_skips_what_the_store_already_has_and_reports_a_down_store() -> None:
    store = MemoryStore()
    writer = Writer(store)
    collection = await writer.collection(TEXT_SPACE)
    v1 = [record(text_event("a", "doc", "t", version=1, event_time=T0), 0)]
    (group,) = (await Planner(StaticResolver()).plan(v1)).groups.values()
    assert await writer.unseen(collection, "a", group) == group
    await writer.write(collection, [tombstone(group[0])])
    assert await writer.unseen(collection, "a", group) == []  # same version: a duplicate
    later = [record(text_event("a", "doc", "t", version=1, event_time=T0 + timedelta(seconds=1)), 1)]
    (newer,) = (await Planner(StaticResolver()).plan(later)).groups.values()
    assert await writer.unseen(collection, "a", newer) == newer
    store.down = True
    with pytest.raises(DependencyDown):
        await writer.write(collection, [tombstone(newer[0])])


LONG = " ".join(
    f"Sentence {i} of the manual explains step {i} in plain words." for i in range(60)
)  # 60 sentences of 10 words


def chunked_space(**policy: int) -> SpaceInfo:
    return SpaceInfo("minilm@1", 8, frozenset({"text", "image"}), ChunkingPolicy(**policy))


async def plan_text(text: str, space: SpaceInfo) -> list:  # type: ignore[type-arg]
    class Resolver:
        async def resolve(self, name: str) -> SpaceInfo | None:
            return space

    plan = await Planner(Resolver()).plan([record(text_event("a", "doc", text, version=1, event_time=T0), 0)])
    (group,) = plan.groups.values()
    return group


def assert_covers(text: str, passages: Sequence[object]) -> None:
    end = 0
    rebuilt = ""
    for p in passages:
        assert text[p.start : p.end] == p.text  # type: ignore[attr-defined]
        rebuilt += text[end : p.end]  # type: ignore[attr-defined]
        end = p.end  # type: ignore[attr-defined]
    assert rebuilt == text


async def test_enrich_splits_long_text_into_passages_with_offsets() -> None:
    space = chunked_space(passage_tokens=60, overlap_tokens=14)
    enriched = await Enricher(FakeEmbedder()).enrich("minilm@1", await plan_text(LONG, space))
    (stored,) = enriched.records
    assert len(stored.passages) > 5
    assert_covers(LONG, stored.passages)
    assert all(p.vector is not None and p.vector.shape == (8,) for p in stored.passages)
    assert stored.passages[-1].text.endswith("step 59 in plain words.")


async def test_enrich_splits_a_truncated_passage_again_so_nothing_is_cut() -> None:
    # The estimate allows ~50 tokens, the "model" reads only 12 words: every passage comes back
    # truncated at first and is split until none is.
    embedder = FakeEmbedder(max_words=12)
    space = chunked_space(passage_tokens=60, overlap_tokens=0)
    enriched = await Enricher(embedder).enrich("minilm@1", await plan_text(LONG, space))
    (stored,) = enriched.records
    assert enriched.dead_letters == []
    assert all(len(p.text.split()) <= 12 for p in stored.passages)
    assert_covers(LONG, stored.passages)


async def test_enrich_dead_letters_text_over_the_spaces_limits() -> None:
    for policy in ({"max_text_bytes": 100}, {"passage_tokens": 30, "overlap_tokens": 0, "max_passages": 3}):
        enriched = await Enricher(FakeEmbedder()).enrich(
            "minilm@1", await plan_text(LONG, chunked_space(**policy))
        )
        assert enriched.records == []
        (letter,) = enriched.dead_letters
        assert letter.reason == REASON.REASON_OVER_LIMIT
        assert "limit" in letter.detail
    # A model that truncates even single words: dead-lettered after a bounded number of splits.
    embedder = FakeEmbedder(max_words=0)
    enriched = await Enricher(embedder).enrich("minilm@1", await plan_text("Tiny text.", chunked_space()))
    assert [d.reason for d in enriched.dead_letters] == [REASON.REASON_OVER_LIMIT]
