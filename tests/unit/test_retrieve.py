"""Retrieve's evidence selection (mmsearch/searcher/retrieve.py): RRF over passage rankings,
duplicates, budgets, image references."""

from __future__ import annotations

from datetime import UTC, datetime

from mmsearch.searcher.retrieve import Budget, Candidate, fuse, image_ref, select
from mmsearch.stores.base import ItemRecord, PassageHit, PassageMatch

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def match(item: str, index: int, kind: str = "text", *, page: int = 1, start: int = 0, end: int = 0,
          text: str = "", score: float = 1.0, uri: str = "") -> PassageMatch:  # fmt: skip
    record = ItemRecord("t", item, "document", None, 1, T0, "", source_uri=uri)
    return PassageMatch(record, PassageHit(index, start, end, text, "g", kind=kind, page=page), score)


BUDGET = Budget(top_k=10, max_tokens=10_000, max_bytes=1 << 20, image_tokens=258, include_images=True)


def test_fusion_counts_every_ranking_of_a_group() -> None:
    both = match("a", 1, text="alpha")
    fused = fuse({"text": {"text": [both, match("a", 2)], "text_bm25": [match("b", 0), both]}}, rrf_k=60)
    assert fused[0].match.passage.index == 1  # ranked by two lists
    assert fused[0].ranks == {"text": 1, "text_bm25": 2}


def test_the_best_visual_evidence_is_not_buried_under_text_in_two_lists() -> None:
    """Text passages found by the vector and BM25 would all outrank a chart found by BM25 alone
    in one fusion; fused per group and then across groups, the chart is second."""
    texts = [match("a", i, text=f"passage {i}") for i in range(10)]
    chart = match("a", 50, "figure", page=6)
    groups = {"text": {"text": texts, "text_bm25": texts[::-1]}, "visual": {"visual_bm25": [chart]}}
    fused = fuse(groups, rrf_k=60)
    assert [c.match.passage.index for c in fused[:2]].count(50) == 1


def test_overlapping_passages_of_one_item_are_duplicates() -> None:
    first = Candidate(match("a", 1, start=0, end=100, text="x" * 100), 0.5)
    overlapping = Candidate(match("a", 2, start=40, end=140, text="y" * 100), 0.4)
    elsewhere = Candidate(match("b", 2, start=60, end=160, text="z" * 100), 0.3)
    chosen = select([first, overlapping, elsewhere], BUDGET)
    assert [c.match.record.item_id for c in chosen.kept] == ["a", "b"] and chosen.duplicates == 1


def test_a_page_render_after_a_crop_of_that_page_and_repeated_images_are_duplicates() -> None:
    crop = Candidate(match("a", 5, "figure", page=3), 0.5, image=b"\xff\xd8chart")
    page = Candidate(match("a", 6, "page", page=3), 0.4, image=b"\xff\xd8page3")
    other_page = Candidate(match("a", 9, "page", page=4), 0.35, image=b"\xff\xd8page4")
    logo_again = Candidate(match("b", 1, "figure", page=1), 0.3, image=b"\xff\xd8chart")
    chosen = select([crop, page, other_page, logo_again], BUDGET)
    assert [c.match.passage.index for c in chosen.kept] == [5, 9] and chosen.duplicates == 2


def test_budgets_skip_what_does_not_fit_and_keep_what_does() -> None:
    long = Candidate(match("a", 1, start=0, end=4000, text="word " * 800), 0.9)
    short = Candidate(match("b", 1, start=0, end=20, text="a short passage here"), 0.8)
    image = Candidate(match("c", 1, "figure"), 0.7, image=b"\xff" * 5000)
    tight = Budget(top_k=10, max_tokens=300, max_bytes=4000, image_tokens=258, include_images=True)
    chosen = select([long, short, image], tight)
    assert [c.match.record.item_id for c in chosen.kept] == ["b"]  # the image is over the byte budget
    assert chosen.omitted == 2 and chosen.tokens <= 300 and chosen.bytes <= 4000
    no_images = Budget(top_k=10, max_tokens=600, max_bytes=4000, image_tokens=258, include_images=False)
    assert [c.match.record.item_id for c in select([long, short, image], no_images).kept] == ["b", "c"]
    assert len(select([short, image], Budget(1, 10_000, 1 << 20, 258, False)).kept) == 1


def test_image_reference_is_the_source_with_a_page_fragment() -> None:
    assert image_ref(match("a", 3, "figure", page=7, uri="file:///r.pdf#x")) == "file:///r.pdf#page=7"
    assert image_ref(match("a", 3, "figure", page=7)) == "mmsearch:a#page=7&child=3"
