"""Long documents end to end (real broker, Triton and embedded store): a 20,000-word document
published to Kafka is split into passages, all of it is searchable (a phrase from its very end is
found by vector search and by hybrid, with the passage as snippet and its offsets), a new version
replaces every passage, and a delete removes every passage."""

from __future__ import annotations

import random

import pytest

from mmsearch.kit.passages import DEFAULT_CHUNKING, split_text
from mmsearch.producer import delete_event, text_event
from mmsearch.stores.base import Query, collection_name
from mmsearch.v1 import common_pb2, searcher_pb2
from tests.conftest import BrokerHandle, TritonHandle
from tests.integration.test_indexer import publish, start_indexing
from tests.integration.test_search import search

pytestmark = pytest.mark.integration

SUBJECTS = (
    "The package manager",
    "A system administrator",
    "The kernel scheduler",
    "Every mirror server",
    "The installer",
    "A maintainer",
    "The release team",
    "The bootloader",
    "The network daemon",
    "A volunteer translator",
    "The build daemon",
    "The security team",
    "The archive software",
)
VERBS = (
    "verifies",
    "downloads",
    "rebuilds",
    "documents",
    "schedules",
    "reviews",
    "configures",
    "signs",
    "translates",
    "uploads",
    "mirrors",
    "announces",
    "tests",
    "records",
)
OBJECTS = (
    "the list of dependencies",
    "a signed release file",
    "the changelog of each upload",
    "the locale settings",
    "the partition table",
    "a bug report with a patch",
    "the keyring",
    "the source tarball",
    "the default configuration",
    "the boot menu",
    "the firewall rules",
    "the mailing list archive",
    "a backport of the library",
    "the documentation index",
)
ENDINGS = (
    "before the next stable release.",
    "after the freeze begins.",
    "for every architecture.",
    "when the archive is updated.",
    "without any manual step.",
    "during the installation.",
    "so that users can trust it.",
    "as described in the policy manual.",
    "on the build machines.",
)
END_V1 = "Finally the lighthouse keeper painted the quartz barometer vermilion beside the fjord."
END_V2 = "At last the beekeeper tuned a copper harpsichord under the glacier moon."


def document(words: int, ending: str, seed: int = 5) -> str:
    """Varied prose (sentences from several templates, paragraphs of varied length) ending with
    one distinctive sentence."""
    rng = random.Random(seed)
    paragraphs: list[str] = []
    count = 0
    while count < words:
        sentences = []
        for _ in range(rng.randint(3, 8)):
            sentence = (
                f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)}"
            )
            if rng.random() < 0.3:
                sentence = f"In section {rng.randint(1, 400)}, " + sentence[0].lower() + sentence[1:]
            sentences.append(sentence)
            count += len(sentence.split())
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs) + "\n\n" + ending


async def test_a_long_document_is_searchable_to_its_end_replaced_and_deleted(
    triton: TritonHandle, broker: BrokerHandle
) -> None:
    indexing = await start_indexing(triton, broker)
    try:
        v1, v2 = document(20_000, END_V1), document(20_000, END_V2, seed=6)
        assert len(v1.split()) >= 20_000
        others = [
            text_event("dev", f"short-{i}", f"{s} {v} {o} {e}", event_time=None)
            for i, (s, v, o, e) in enumerate(zip(SUBJECTS, VERBS, OBJECTS, ENDINGS, strict=False))
        ]
        produced = publish(
            indexing.bootstrap,
            indexing.topic,
            [*others, text_event("dev", "manual", v1, title="The manual", version=1)],
        )
        await indexing.wait_caught_up(produced)
        store = await indexing.service.stores.get()  # type: ignore[union-attr]
        collection = collection_name("minilm@1")
        expected = split_text(v1, DEFAULT_CHUNKING)
        assert len(expected) > 100
        assert await store.count_passages(collection, "dev", "manual") == len(expected)

        # The last sentence is found by vector search and by hybrid, with its passage.
        for hybrid in (False, True):
            request = searcher_pb2.SearchRequest(
                query=common_pb2.Content(text=END_V1),
                top_k=5,
                hybrid=searcher_pb2.HybridOptions(enabled=hybrid),
            )
            response = await search(indexing, request)
            top = response.hits[0]
            assert top.item_id == "manual", [h.item_id for h in response.hits]
            assert [h.item_id for h in response.hits].count("manual") == 1
            assert top.passage.end == len(v1)
            assert v1[top.passage.start : top.passage.end].endswith(END_V1)
            assert top.preview.snippet == v1[top.preview.snippet_start : top.preview.snippet_end]
            if hybrid:
                assert top.scores.bm25_rank == 1 and top.scores.vector_rank == 1
        bm25 = await store.search(collection, Query("dev", limit=3, text="quartz barometer vermilion"))
        assert [h.record.item_id for h in bm25] == ["manual"]

        # A new version replaces every passage: nothing of the old text is findable.
        produced += publish(
            indexing.bootstrap,
            indexing.topic,
            [text_event("dev", "manual", v2, title="The manual", version=2)],
        )
        await indexing.wait_caught_up(produced)
        assert await store.count_passages(collection, "dev", "manual") == len(
            split_text(v2, DEFAULT_CHUNKING)
        )
        assert await store.search(collection, Query("dev", limit=3, text="quartz barometer vermilion")) == []
        response = await search(
            indexing,
            searcher_pb2.SearchRequest(
                query=common_pb2.Content(text=END_V2),
                top_k=3,
                hybrid=searcher_pb2.HybridOptions(enabled=True),
            ),
        )
        assert response.hits[0].item_id == "manual"
        assert response.hits[0].item_version == 2
        assert v2[response.hits[0].passage.start : response.hits[0].passage.end].endswith(END_V2)

        # A delete removes every passage.
        produced += publish(indexing.bootstrap, indexing.topic, [delete_event("dev", "manual", version=3)])
        await indexing.wait_caught_up(produced)
        assert await store.count_passages(collection, "dev", "manual") == 0
        response = await search(
            indexing,
            searcher_pb2.SearchRequest(
                query=common_pb2.Content(text=END_V2),
                top_k=20,
                hybrid=searcher_pb2.HybridOptions(enabled=True),
            ),
        )
        assert "manual" not in [h.item_id for h in response.hits]
    finally:
        await indexing.service.running.stop()
