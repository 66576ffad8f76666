"""Reciprocal rank fusion (RRF): the one implementation every store adapter uses.

Convention (Cormack, Clarke & Buettcher 2009):

- A ranking is a sequence of (item id, raw score), best first. An item's rank in it is its
  1-based position (the first item has rank 1). An id repeated within one ranking counts
  once, at its first position; ranks count distinct ids.
- The fused score of an item is  sum over the rankings that contain it of 1 / (k + rank).
  The terms are summed with math.fsum (correctly rounded), so items with the same multiset
  of ranks get bit-identical scores whatever the order of the rankings.
- k is the caller's effective constant and must be >= 1 (a request's "0 = server default"
  is resolved by the searcher before a query reaches the store); otherwise InvalidQuery
  with field "hybrid.rrf_k".
- Order, fully deterministic:
    1. higher fused score first;
    2. on equal scores, the better (smaller) best rank across the rankings first;
    3. then item id ascending (plain string order).

Besides its score, every fused item carries its rank in each ranking and that ranking's raw
score (None where the ranking does not contain it), so hits can report both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mmsearch.stores.errors import InvalidQuery

RRF_K_FIELD = "hybrid.rrf_k"

# One ranking: (item id, raw score) pairs, best first.
Ranking = Sequence[tuple[str, float]]


@dataclass(frozen=True)
class FusedItem:
    id: str
    score: float  # sum of 1 / (k + rank) over the rankings holding the item
    ranks: tuple[int | None, ...]  # 1-based rank in each input ranking; None when absent
    raw_scores: tuple[float | None, ...]  # the item's score in each input ranking; None when absent

    @property
    def best_rank(self) -> int:
        """The smallest rank across the rankings (every fused item is in at least one)."""
        return min(r for r in self.ranks if r is not None)


def check_rrf_k(k: int) -> None:
    """InvalidQuery(field="hybrid.rrf_k") unless k is an integer >= 1."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidQuery(f"must be an integer, not {type(k).__name__}", field=RRF_K_FIELD)
    if k < 1:
        raise InvalidQuery(f"must be at least 1 (0 means the server default), got {k}", field=RRF_K_FIELD)


def reciprocal_rank_fusion(rankings: Sequence[Ranking], k: int) -> list[FusedItem]:
    """Fuse `rankings` by RRF with constant `k`; every item of any ranking once, best first
    (see the module docstring for the score and the tie rule)."""
    check_rrf_k(k)
    n = len(rankings)
    ranks: dict[str, list[int | None]] = {}
    raw: dict[str, list[float | None]] = {}
    for which, ranking in enumerate(rankings):
        rank = 0
        for item_id, score in ranking:
            item_ranks = ranks.get(item_id)
            if item_ranks is None:
                item_ranks = ranks[item_id] = [None] * n
                raw[item_id] = [None] * n
            elif item_ranks[which] is not None:
                continue  # repeated within this ranking: the first position counts
            rank += 1
            item_ranks[which] = rank
            raw[item_id][which] = score
    fused = [
        FusedItem(
            id=item_id,
            score=math.fsum(1.0 / (k + r) for r in item_ranks if r is not None),
            ranks=tuple(item_ranks),
            raw_scores=tuple(raw[item_id]),
        )
        for item_id, item_ranks in ranks.items()
    ]
    fused.sort(key=lambda item: (-item.score, item.best_rank, item.id))
    return fused
