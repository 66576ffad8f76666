"""Searcher.Retrieve: evidence for a generator, from passages rather than items.

Rankings (each over passages of the tenant's live items, current generations only):
  text         the query vector over text passages (a document page's text, a text item's passages)
  text_bm25    BM25 over the text passages (text queries with hybrid)
  visual       the query vector over visual children (page renders, figures, table crops), which
               live in the same space as text (images are embedded into the text space)
  visual_bm25  BM25 over the visual children's text (captions, table text, OCR words)
fused by the shared RRF (mmsearch/stores/fusion.py) within each group, then the two groups with
each other (`fuse`), optionally reranked (text evidence only, the
reranker reads text), deduplicated (overlapping passages of one item; a page render when a crop of
that page is already in; identical images), cut to the token and byte budgets and grouped by
document and page, best first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mmsearch.kit.passages import estimate_tokens
from mmsearch.stores.base import VISUAL_KINDS, PassageMatch
from mmsearch.stores.fusion import reciprocal_rank_fusion
from mmsearch.v1 import searcher_pb2

KIND_NAMES = {
    searcher_pb2.EVIDENCE_KIND_TEXT: "text",
    searcher_pb2.EVIDENCE_KIND_FIGURE: "figure",
    searcher_pb2.EVIDENCE_KIND_TABLE: "table",
    searcher_pb2.EVIDENCE_KIND_PAGE: "page",
}
KIND_VALUES = {name: value for value, name in KIND_NAMES.items()}
DEFAULT_CANDIDATES = 50
MAX_CANDIDATES = 500
DEFAULT_TOP_K = 8
MAX_TOP_K = 100
DEFAULT_MAX_TOKENS = 2000
DEFAULT_MAX_BYTES = 1 << 20
MAX_BYTES = 8 << 20
DEFAULT_IMAGE_TOKENS = 258
# Two passages of one item overlapping by more than this share of the shorter are duplicates.
OVERLAP_DUPLICATE = 0.5


def key(match: PassageMatch) -> str:
    return f"{match.record.item_id}\x1f{match.passage.index}"


@dataclass
class Candidate:
    match: PassageMatch
    fused: float
    ranks: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    rerank: float | None = None
    image: bytes = b""

    @property
    def score(self) -> float:
        return self.rerank if self.rerank is not None else self.fused


def fuse(groups: Mapping[str, Mapping[str, Sequence[PassageMatch]]], rrf_k: int) -> list[Candidate]:
    """Two levels of the shared RRF: within each group (the text evidence: vector and BM25 over
    text passages; the visual evidence: vector and BM25 over figures, tables and pages), then
    the groups' orders with each other. One level over all the lists would let a text passage,
    which is in two lists, beat a figure that only BM25 finds (the image space ranks charts
    poorly): measured in docs/benchmarks.md, no chart reached the top 8."""
    by_key: dict[str, Candidate] = {}
    orders: list[list[tuple[str, float]]] = []
    for rankings in groups.values():
        names = list(rankings)
        fused = reciprocal_rank_fusion([[(key(m), m.score) for m in rankings[n]] for n in names], rrf_k)
        for hit in fused:
            match = next(m for n in names for m in rankings[n] if key(m) == hit.id)
            candidate = by_key.setdefault(hit.id, Candidate(match, hit.score))
            for name, rank, raw in zip(names, hit.ranks, hit.raw_scores, strict=True):
                if rank is not None and raw is not None:
                    candidate.ranks[name] = rank
                    candidate.scores[name] = raw
        orders.append([(hit.id, hit.score) for hit in fused])
    if len(orders) == 1:
        return [by_key[item_id] for item_id, _ in orders[0]]
    out = []
    for hit in reciprocal_rank_fusion(orders, rrf_k):
        candidate = by_key[hit.id]
        candidate.fused = hit.score
        out.append(candidate)
    return out


def _overlap(a: PassageMatch, b: PassageMatch) -> float:
    pa, pb = a.passage, b.passage
    shorter = min(pa.end - pa.start, pb.end - pb.start)
    if shorter <= 0:
        return 0.0
    return max(0, min(pa.end, pb.end) - max(pa.start, pb.start)) / shorter


def is_duplicate(candidate: Candidate, kept: Sequence[Candidate]) -> bool:
    match = candidate.match
    for other in kept:
        om = other.match
        if om.record.item_id != match.record.item_id:
            if candidate.image and candidate.image == other.image:
                return True  # the same picture in two documents (a logo, a repeated chart)
            continue
        kind, other_kind = match.passage.kind, om.passage.kind
        if kind == "text" and other_kind == "text" and _overlap(match, om) > OVERLAP_DUPLICATE:
            return True
        same_page = match.passage.page == om.passage.page and match.passage.page > 0
        if kind == "page" and same_page and other_kind in ("figure", "table"):
            return True  # the crop is the more precise evidence of that page
        if kind in VISUAL_KINDS and candidate.image and candidate.image == other.image:
            return True
    return False


@dataclass(frozen=True)
class Budget:
    top_k: int
    max_tokens: int
    max_bytes: int
    image_tokens: int
    include_images: bool


@dataclass
class Selection:
    kept: list[Candidate] = field(default_factory=list)
    duplicates: int = 0
    omitted: int = 0
    tokens: int = 0
    bytes: int = 0


def cost(candidate: Candidate, budget: Budget) -> tuple[int, int]:
    """(estimated tokens, bytes) the piece counts for."""
    text = candidate.match.passage.text
    tokens = estimate_tokens(text) if text else 0
    size = len(text.encode("utf-8"))
    if candidate.match.passage.kind in VISUAL_KINDS:
        tokens += budget.image_tokens
        if budget.include_images:
            size += len(candidate.image)
    return tokens, size


def select(candidates: Sequence[Candidate], budget: Budget) -> Selection:
    """Best first: skip duplicates, keep what fits the budgets (a piece that does not fit is
    skipped, a smaller later one may still fit), at most top_k."""
    out = Selection()
    for candidate in candidates:
        if is_duplicate(candidate, out.kept):
            out.duplicates += 1
            continue
        tokens, size = cost(candidate, budget)
        if (
            len(out.kept) >= budget.top_k
            or out.tokens + tokens > budget.max_tokens
            or out.bytes + size > budget.max_bytes
        ):
            out.omitted += 1
            continue
        out.kept.append(candidate)
        out.tokens += tokens
        out.bytes += size
    return out


def image_ref(match: PassageMatch) -> str:
    record, passage = match.record, match.passage
    if passage.page and record.source_uri:
        base = record.source_uri.split("#", 1)[0]
        return f"{base}#page={passage.page}"
    return f"mmsearch:{record.item_id}#page={passage.page}&child={passage.index}"
