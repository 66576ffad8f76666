"""Long text -> passages: token-aware (by a conservative estimate), with overlap, cut at sentence
boundaries where possible, each passage an exact slice of the text with its character offsets.

The chunking policy is part of an embedding space's definition (mmsearch/embedder/spaces.py hashes
it into the space's preprocessing hash and ListSpaces publishes it as `Space.chunking`); the indexer
splits with the policy of the space it writes into.

Tokens are *estimated* here (the services have no tokenizer): `estimate_tokens` over-counts a BERT
WordPiece tokenization for ordinary prose (every word >= 1 token, long words one more per 6 chars,
every punctuation mark and every non-ASCII letter one token each, plus [CLS] and [SEP]). The model's
own count is the final word: the embedder returns `truncated` per item, and the indexer splits a
passage that came back truncated further (`split_text(passage, policy.halved())`) and embeds the
parts again, so nothing is cut (mmsearch/indexer/enrich.py).

Offsets are Python string indices (Unicode code points) into the text; `text[p.start:p.end] ==
p.text` always. Passages cover the text in order: the first starts at 0, the last ends at len(text),
ends strictly increase, and each passage starts at or before the previous one's end (the overlap),
so the passages' non-overlapping parts, text[prev.end:p.end], concatenate to the text. No passage
is empty or only whitespace unless the text is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

# Sentence ends: terminal punctuation (optionally closing quotes / brackets) followed by whitespace,
# or a blank line; CJK full stops need no whitespace. A unit ends after the whitespace that follows.
_SENTENCE_END = re.compile(r"(?:[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+|[\u3002\uff01\uff1f]+\s*|\n\s*\n\s*)")
_WORD_END = re.compile(r"\S+\s*")
_TOKEN = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")
SPECIAL_TOKENS = 2  # [CLS] and [SEP]


@dataclass(frozen=True)
class ChunkingPolicy:
    """How a space splits long text (all sizes in estimated tokens, see estimate_tokens)."""

    # Most estimated tokens per passage, [CLS]/[SEP] included; below the encoder's max_tokens so
    # the estimate's error rarely reaches the model's limit (the truncation feedback covers the rest).
    passage_tokens: int = 200
    # Estimated tokens a passage repeats from the end of the previous one (whole sentences).
    overlap_tokens: int = 40
    # Limits per item: past either, the item is dead-lettered (REASON_OVER_LIMIT), never truncated.
    max_passages: int = 256
    max_text_bytes: int = 1024 * 1024
    # Names the token estimate, so a change of estimator is a change of the space's hash.
    estimator: str = "wordpiece-upper-v1"

    def __post_init__(self) -> None:
        if self.passage_tokens < SPECIAL_TOKENS + 1:
            raise ValueError(f"passage_tokens must be at least {SPECIAL_TOKENS + 1}")
        if not 0 <= self.overlap_tokens < self.passage_tokens // 2 + 1:
            raise ValueError("overlap_tokens must be between 0 and half of passage_tokens")
        if self.max_passages < 1 or self.max_text_bytes < 1:
            raise ValueError("max_passages and max_text_bytes must be positive")

    def describe(self) -> str:
        """The canonical text hashed into the space's preprocessing hash."""
        return (
            f"passages:tokens={self.passage_tokens};overlap={self.overlap_tokens};"
            f"max_passages={self.max_passages};max_text_bytes={self.max_text_bytes};"
            f"estimator={self.estimator};sentences=v1"
        )

    def halved(self) -> ChunkingPolicy:
        """The policy for re-splitting a passage the model truncated."""
        tokens = max(SPECIAL_TOKENS + 1, self.passage_tokens // 2)
        return replace(self, passage_tokens=tokens, overlap_tokens=min(self.overlap_tokens, tokens // 4))


DEFAULT_CHUNKING = ChunkingPolicy()


@dataclass(frozen=True)
class TextPassage:
    index: int
    start: int
    end: int
    text: str


def _piece_tokens(piece: str) -> int:
    # An ASCII letter/digit run: one token, plus one per further 6 characters (rare words split
    # into several word pieces); anything else (punctuation, each non-ASCII character): one.
    if piece.isascii() and piece.isalnum():
        return 1 + (len(piece) - 1) // 6
    return 1


def estimate_tokens(text: str) -> int:
    """An upper-leaning estimate of a WordPiece token count, without [CLS]/[SEP]."""
    return sum(_piece_tokens(m) for m in _TOKEN.findall(text))


def _spans(text: str, start: int, end: int, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """[start, end) cut after each match of `pattern`; the spans cover it exactly."""
    spans = []
    cut = start
    for match in pattern.finditer(text, start, end):
        if match.end() > cut and match.end() < end:
            spans.append((cut, match.end()))
            cut = match.end()
    spans.append((cut, end))
    return [s for s in spans if s[1] > s[0]]


def _units(text: str, budget: int) -> list[tuple[int, int, int]]:
    """(start, end, tokens) pieces covering the text: sentences, else words, else characters,
    each within `budget` estimated tokens."""
    units: list[tuple[int, int, int]] = []
    for s_start, s_end in _spans(text, 0, len(text), _SENTENCE_END):
        tokens = estimate_tokens(text[s_start:s_end])
        if tokens <= budget:
            units.append((s_start, s_end, tokens))
            continue
        for w_start, w_end in _spans(text, s_start, s_end, _WORD_END):
            tokens = estimate_tokens(text[w_start:w_end])
            if tokens <= budget:
                units.append((w_start, w_end, tokens))
                continue
            # One "word" over the budget (a long hash, a CJK run): cut by characters; each
            # character is at most one estimated token plus the ASCII run rule.
            step = max(1, budget - 1)
            for c_start in range(w_start, w_end, step):
                c_end = min(w_end, c_start + step)
                units.append((c_start, c_end, estimate_tokens(text[c_start:c_end])))
    return units


def split_text(text: str, policy: ChunkingPolicy = DEFAULT_CHUNKING) -> list[TextPassage]:
    """The passages of `text` under `policy` (see the module docstring for the guarantees)."""
    if not text:
        return []
    budget = policy.passage_tokens - SPECIAL_TOKENS
    units = _units(text, budget)
    # Merge whitespace-only units into their neighbour so no passage is only whitespace.
    merged: list[tuple[int, int, int]] = []
    for unit in units:
        blank = not text[unit[0] : unit[1]].strip()
        if merged and (blank or not text[merged[-1][0] : merged[-1][1]].strip()):
            prev = merged.pop()
            merged.append((prev[0], unit[1], prev[2] + unit[2]))
        else:
            merged.append(unit)
    units = merged
    passages: list[tuple[int, int]] = []  # (first unit, last unit + 1)
    first = 0
    while first < len(units):
        last = first
        tokens = 0
        while last < len(units) and (last == first or tokens + units[last][2] <= budget):
            tokens += units[last][2]
            last += 1
        passages.append((first, last))
        if last >= len(units):
            break
        # Overlap: back up whole units (never all of this passage) within overlap_tokens.
        back = last
        carried = 0
        while back - 1 > first and carried + units[back - 1][2] <= policy.overlap_tokens:
            back -= 1
            carried += units[back][2]
        # The next passage must take at least one new unit within the budget.
        while back < last and carried + units[last][2] > budget:
            carried -= units[back][2]
            back += 1
        first = back
    out = []
    for index, (a, b) in enumerate(passages):
        start, end = units[a][0], units[b - 1][1]
        out.append(TextPassage(index, start, end, text[start:end]))
    return out


def over_limit(text: str, policy: ChunkingPolicy) -> str | None:
    """Why `text` may not be indexed under `policy` (its size), or None."""
    size = len(text.encode("utf-8"))
    if size > policy.max_text_bytes:
        return f"text is {size} bytes, over the space's limit of {policy.max_text_bytes} bytes per item"
    return None


def too_many_passages(count: int, policy: ChunkingPolicy) -> str | None:
    if count > policy.max_passages:
        return (
            f"text splits into {count} passages, over the space's limit of {policy.max_passages} "
            "passages per item"
        )
    return None
