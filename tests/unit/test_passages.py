"""The passage splitter (mmsearch/kit/passages.py): offsets, overlap, sentence boundaries, unicode,
limits, and the cover property (the non-overlapping parts concatenate to the text)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsearch.kit.passages import (
    DEFAULT_CHUNKING,
    SPECIAL_TOKENS,
    ChunkingPolicy,
    TextPassage,
    estimate_tokens,
    over_limit,
    split_text,
    too_many_passages,
)

SMALL = ChunkingPolicy(passage_tokens=24, overlap_tokens=8)
MEDIUM = ChunkingPolicy(passage_tokens=60, overlap_tokens=20)
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Packets are retransmitted when no acknowledgement arrives in time!",
    "Is the configuration file read before the network comes up?",
    "Débian's installer supports encrypted volumes and LVM.",
    "東京は日本の首都です。",
    "Numbers like 3.14159 and 2,718 should not end a sentence.",
]


def check_cover(text: str, passages: list[TextPassage]) -> None:
    assert passages, "non-empty text has passages"
    assert passages[0].start == 0
    assert passages[-1].end == len(text)
    rebuilt = []
    previous_end = 0
    for i, p in enumerate(passages):
        assert p.index == i
        assert text[p.start : p.end] == p.text
        assert p.end > previous_end, "ends strictly increase"
        assert p.start <= previous_end, "no gap between passages"
        rebuilt.append(text[previous_end : p.end])
        previous_end = p.end
        if text.strip():
            assert p.text.strip(), "no whitespace-only passage"
    assert "".join(rebuilt) == text


def test_short_text_is_one_passage() -> None:
    text = "A short note."
    assert split_text(text) == [TextPassage(0, 0, len(text), text)]
    assert split_text("") == []


def test_passages_end_at_sentence_boundaries_and_overlap() -> None:
    text = " ".join(SENTENCES * 4)
    passages = split_text(text, MEDIUM)
    assert len(passages) > 3
    check_cover(text, passages)
    for p in passages[:-1]:
        # Cut after a sentence's terminal punctuation (and its whitespace), never inside a word.
        assert p.text.rstrip()[-1] in ".!?。", p.text
        assert estimate_tokens(p.text) + SPECIAL_TOKENS <= MEDIUM.passage_tokens
    overlapping = [b for a, b in itertools.pairwise(passages) if b.start < a.end]
    assert overlapping, "consecutive passages share whole sentences"
    for a, b in itertools.pairwise(passages):
        assert text[b.start : a.end] in a.text


def test_one_long_sentence_is_cut_at_words_and_a_long_word_by_characters() -> None:
    words = " ".join(f"word{i}" for i in range(200))
    passages = split_text(words, SMALL)
    check_cover(words, passages)
    assert all(p.text.endswith(" ") for p in passages[:-1])
    blob = "x" * 5000
    passages = split_text(blob, SMALL)
    check_cover(blob, passages)
    assert all(estimate_tokens(p.text) + SPECIAL_TOKENS <= SMALL.passage_tokens for p in passages)


def test_unicode_offsets_are_code_points() -> None:
    text = "😀 émoji first. " * 30 + "日本語の文章です。" * 30
    passages = split_text(text, SMALL)
    check_cover(text, passages)
    assert all(text[p.start : p.end] == p.text for p in passages)


def test_leading_and_trailing_whitespace_belong_to_passages() -> None:
    text = "\n\n  " + " ".join(SENTENCES * 3) + "\n\n\n"
    passages = split_text(text, SMALL)
    check_cover(text, passages)


def test_estimate_is_conservative_for_prose() -> None:
    # WordPiece gives ~1.2-1.3 tokens per English word; the estimate is at least one per word and
    # one per punctuation mark.
    text = "The installer asks for the hostname, the domain and the root password."
    assert estimate_tokens(text) >= len(text.split()) + 2


def test_limits_and_policy_description() -> None:
    policy = ChunkingPolicy(max_passages=2, max_text_bytes=10)
    assert over_limit("é" * 6, policy) is not None  # 12 bytes
    assert over_limit("abc", policy) is None
    assert too_many_passages(3, policy) is not None
    assert too_many_passages(2, policy) is None
    assert DEFAULT_CHUNKING.describe() != ChunkingPolicy(overlap_tokens=20).describe()
    halved = DEFAULT_CHUNKING.halved()
    assert halved.passage_tokens == DEFAULT_CHUNKING.passage_tokens // 2
    with pytest.raises(ValueError):
        ChunkingPolicy(passage_tokens=2)
    with pytest.raises(ValueError):
        ChunkingPolicy(passage_tokens=20, overlap_tokens=15)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(
        alphabet=st.sampled_from(list("ab cé.!?\n日。😀,")) | st.characters(codec="utf-8"), max_size=600
    ),
    tokens=st.integers(min_value=3, max_value=60),
    overlap_ratio=st.floats(min_value=0, max_value=0.5),
)
def test_property_passages_cover_the_text_exactly(text: str, tokens: int, overlap_ratio: float) -> None:
    policy = ChunkingPolicy(passage_tokens=tokens, overlap_tokens=int(tokens * overlap_ratio) // 1 // 2)
    passages = split_text(text, policy)
    if not text:
        assert passages == []
        return
    check_cover(text, passages)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=40))
def test_property_prose_passages_fit_the_budget(sentences: list[str]) -> None:
    text = " ".join(sentences)
    for p in split_text(text, SMALL):
        assert estimate_tokens(p.text) + SPECIAL_TOKENS <= SMALL.passage_tokens
