"""Query validation shared by every store adapter: one `validate_query`, one set of rules.

A query is refused with InvalidQuery naming the field when:

- limit < 1 ("limit") or offset < 0 ("offset");
- rrf_k < 1 ("hybrid.rrf_k"; for every query, not only hybrid ones: 0 is the API's
  "server default", resolved before a query reaches the store);
- candidates_per_ranking outside 0..MAX_CANDIDATES_PER_RANKING ("hybrid.candidates_per_ranking");
- it has neither a vector nor non-blank text ("query");
- the vector's dimension differs from the collection's, when known, or it holds NaN or
  infinite values ("vector");
- a modality is not one of MODALITIES ("modalities[i]");
- the filter does not parse against the collection's attributes (the path, e.g.
  "filter.all_of[1].condition.field").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from mmsearch.stores.base import MAX_CANDIDATES_PER_RANKING, MODALITIES, FieldKind, Query
from mmsearch.stores.errors import InvalidQuery
from mmsearch.stores.filters import FilterNode, parse_filter
from mmsearch.stores.fusion import check_rrf_k

CANDIDATES_FIELD = "hybrid.candidates_per_ranking"


class QueryTarget(Protocol):
    """What validation needs of a collection (a `Collection` is one)."""

    @property
    def dimension(self) -> int | None:
        """The vector dimension; None when the store does not know it (not checked then)."""

    @property
    def attributes(self) -> Mapping[str, FieldKind]: ...


@dataclass(frozen=True)
class CheckedQuery:
    """A validated query, normalised for the adapters."""

    query: Query
    vector: npt.NDArray[np.float32] | None  # 1-D float32, finite, of the collection's dimension
    text: str  # stripped BM25 text; "" when no BM25 ranking runs
    filter: FilterNode | None  # the parsed filter tree; None for no restriction

    @property
    def hybrid(self) -> bool:
        """Both rankings run and are fused."""
        return self.vector is not None and bool(self.text)

    @property
    def depth(self) -> int:
        """offset + limit: how far down the final ranking the page reaches."""
        return self.query.offset + self.query.limit

    def candidates(self, default: int) -> int:
        """Candidates each ranking fetches before fusion: candidates_per_ranking (or `default`
        when it is 0), but never fewer than offset + limit."""
        return max(self.query.candidates_per_ranking or default, self.depth)


def validate_query(query: Query, collection: QueryTarget) -> CheckedQuery:
    """Check `query` against `collection` (see the module docstring); InvalidQuery if bad."""
    if query.limit < 1:
        raise InvalidQuery(f"must be positive, got {query.limit}", field="limit")
    if query.offset < 0:
        raise InvalidQuery(f"must not be negative, got {query.offset}", field="offset")
    check_rrf_k(query.rrf_k)
    if not 0 <= query.candidates_per_ranking <= MAX_CANDIDATES_PER_RANKING:
        raise InvalidQuery(
            f"must be 0 (the store's default) to {MAX_CANDIDATES_PER_RANKING}, "
            f"got {query.candidates_per_ranking}",
            field=CANDIDATES_FIELD,
        )
    text = (query.text or "").strip()
    vector: npt.NDArray[np.float32] | None = None
    if query.vector is not None:
        vector = np.asarray(query.vector, dtype=np.float32).reshape(-1)
        if collection.dimension is not None and vector.shape[0] != collection.dimension:
            raise InvalidQuery(
                f"query vector has {vector.shape[0]} dimensions, the collection has {collection.dimension}",
                field="vector",
            )
        if not np.isfinite(vector).all():
            raise InvalidQuery("query vector has NaN or infinite values", field="vector")
    if vector is None and not text:
        raise InvalidQuery("a query needs a vector or text", field="query")
    for i, modality in enumerate(query.modalities):
        if modality not in MODALITIES:
            raise InvalidQuery(
                f"unknown modality {modality!r}; one of {', '.join(MODALITIES)}", field=f"modalities[{i}]"
            )
    node = parse_filter(query.filter, collection.attributes) if query.filter is not None else None
    return CheckedQuery(query=query, vector=vector, text=text, filter=node)
