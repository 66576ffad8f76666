"""mmsearch.stores.fusion alone: hand-computed RRF scores, the tie rule, empty rankings, k validation,
and properties over random rankings."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmsearch.stores.errors import InvalidQuery, StoreError
from mmsearch.stores.fusion import FusedItem, reciprocal_rank_fusion


def exact(k: int, *ranks: int | None) -> float:
    return float(sum((Fraction(1, k + r) for r in ranks if r is not None), Fraction(0)))


def order(fused: list[FusedItem]) -> list[str]:
    return [f.id for f in fused]


def test_hand_computed_scores_ranks_and_raw_scores() -> None:
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
    bm25 = [("c", 12.0), ("d", 3.5)]
    fused = reciprocal_rank_fusion([dense, bm25], k=60)
    # c: 1/63 + 1/61 = 0.032266; a: 1/61 = 0.016393; b: 1/62 = 0.016129; d: 1/62 = 0.016129 (tie with b:
    # best rank 2 each -> item id: b before d).
    assert order(fused) == ["c", "a", "b", "d"]
    assert [f.score for f in fused] == [
        pytest.approx(exact(60, 3, 1), rel=1e-15),
        pytest.approx(exact(60, 1), rel=1e-15),
        pytest.approx(exact(60, 2), rel=1e-15),
        pytest.approx(exact(60, 2), rel=1e-15),
    ]
    by_id = {f.id: f for f in fused}
    assert by_id["c"].ranks == (3, 1)
    assert by_id["c"].raw_scores == (0.7, 12.0)
    assert by_id["a"].ranks == (1, None)
    assert by_id["a"].raw_scores == (0.9, None)
    assert by_id["d"].ranks == (None, 2)
    assert by_id["d"].raw_scores == (None, 3.5)
    assert by_id["c"].best_rank == 1
    assert by_id["b"].score == by_id["d"].score  # the same float, not just close


def test_rank_starts_at_one() -> None:
    (only,) = reciprocal_rank_fusion([[("x", 1.0)]], k=1)
    assert only.score == 0.5  # 1 / (1 + 1): rank 1, not position 0
    assert only.ranks == (1,)


def test_ties_broken_by_best_rank_then_item_id() -> None:
    # k = 1: "z" is rank 1 in one ranking (1/2); "a" is rank 3 in both (1/4 + 1/4 = 1/2).
    dense = [("z", 0.9), ("m", 0.8), ("a", 0.7)]
    bm25 = [("q", 9.0), ("n", 8.0), ("a", 7.0)]
    fused = reciprocal_rank_fusion([dense, bm25], k=1)
    by_id = {f.id: f for f in fused}
    assert by_id["z"].score == by_id["a"].score == 0.5
    # z and q: 1/2, best rank 1 -> id; a: 1/2 with best rank 3 after them although "a" < "q" < "z";
    # m and n: 1/3, best rank 2 -> id.
    assert order(fused) == ["q", "z", "a", "m", "n"]


def test_same_rank_multiset_ties_exactly_whatever_the_ranking_order() -> None:
    # Three rankings: the sums of the same three terms in different orders are bit-identical.
    r1 = [("x", 1.0), ("y", 1.0), ("w", 1.0)]
    r2 = [("y", 1.0), ("w", 1.0), ("x", 1.0)]
    r3 = [("w", 1.0), ("x", 1.0), ("y", 1.0)]
    fused = reciprocal_rank_fusion([r1, r2, r3], k=7)
    assert len({f.score for f in fused}) == 1
    assert order(fused) == ["w", "x", "y"]
    assert fused[0].score == pytest.approx(exact(7, 1, 2, 3), rel=1e-15)


def test_one_ranking_empty_or_none_at_all() -> None:
    dense = [("a", 0.5), ("b", 0.4)]
    fused = reciprocal_rank_fusion([dense, []], k=60)
    assert order(fused) == ["a", "b"]
    assert [f.ranks for f in fused] == [(1, None), (2, None)]
    assert [f.raw_scores for f in fused] == [(0.5, None), (0.4, None)]
    assert reciprocal_rank_fusion([[], dense], k=60)[0].ranks == (None, 1)
    assert reciprocal_rank_fusion([[], []], k=60) == []
    assert reciprocal_rank_fusion([], k=60) == []


def test_repeated_id_in_one_ranking_counts_once_at_its_first_position() -> None:
    fused = reciprocal_rank_fusion([[("a", 3.0), ("b", 2.0), ("a", 1.0), ("c", 0.5)]], k=1)
    assert order(fused) == ["a", "b", "c"]
    assert [f.ranks for f in fused] == [(1,), (2,), (3,)]
    assert fused[0].raw_scores == (3.0,)


@pytest.mark.parametrize("k", [0, -1, -60])
def test_k_below_one_is_an_invalid_query_naming_the_field(k: int) -> None:
    with pytest.raises(InvalidQuery) as raised:
        reciprocal_rank_fusion([[("a", 1.0)]], k=k)
    assert raised.value.field == "hybrid.rrf_k"
    assert str(raised.value).startswith("hybrid.rrf_k: ")
    assert isinstance(raised.value, StoreError)


@pytest.mark.parametrize("k", [1.5, True, "60"])
def test_k_must_be_an_integer(k: object) -> None:
    with pytest.raises(InvalidQuery, match="integer"):
        reciprocal_rank_fusion([[("a", 1.0)]], k=k)  # type: ignore[arg-type]


def test_k_changes_the_order() -> None:
    # z is third in both rankings. k = 1: 1/4 + 1/4 = 1/2 ties the two first places and loses on best
    # rank; k = 1000: being in both rankings wins.
    rankings = [[("x", 1.0), ("y", 1.0), ("z", 1.0)], [("w", 1.0), ("v", 1.0), ("z", 1.0)]]
    assert order(reciprocal_rank_fusion(rankings, k=1)) == ["w", "x", "z", "v", "y"]
    assert order(reciprocal_rank_fusion(rankings, k=1000))[0] == "z"


# --------------------------------------------------------------------------------------- properties

ids = st.sampled_from([f"i{n:02d}" for n in range(30)])
ranking = st.lists(ids, unique=True, max_size=20).map(lambda xs: [(x, float(-i)) for i, x in enumerate(xs)])


@given(rankings=st.lists(ranking, max_size=4), k=st.integers(min_value=1, max_value=500))
def test_properties(rankings: list[list[tuple[str, float]]], k: int) -> None:
    fused = reciprocal_rank_fusion(rankings, k)
    # Every item of every ranking exactly once.
    assert sorted(order(fused)) == sorted({x for r in rankings for x, _ in r})
    for item in fused:
        # Ranks are 1-based positions; raw scores are the ranking's; the score is the exact RRF sum.
        for which, r in enumerate(rankings):
            position = next((i for i, (x, _) in enumerate(r) if x == item.id), None)
            assert item.ranks[which] == (None if position is None else position + 1)
            assert item.raw_scores[which] == (None if position is None else r[position][1])
        assert item.score == pytest.approx(exact(k, *item.ranks), rel=1e-12)
    # Sorted by the documented key.
    keys = [(-f.score, f.best_rank, f.id) for f in fused]
    assert keys == sorted(keys)
    # The order of the rankings does not matter.
    reversed_fused = reciprocal_rank_fusion(rankings[::-1], k)
    assert order(reversed_fused) == order(fused)
    assert [f.score for f in reversed_fused] == [f.score for f in fused]


@given(a=ranking, b=ranking, k=st.integers(min_value=1, max_value=100))
def test_an_item_ahead_in_every_ranking_is_ahead_when_fused(
    a: list[tuple[str, float]], b: list[tuple[str, float]], k: int
) -> None:
    fused = reciprocal_rank_fusion([a, b], k)
    for i, x in enumerate(fused):
        for j, y in enumerate(fused):
            # x is present wherever y is, at a rank as good or better, and strictly better somewhere
            pairs = list(zip(x.ranks, y.ranks, strict=True))
            as_good = all(ry is None or (rx is not None and rx <= ry) for rx, ry in pairs)
            better = any(rx is not None and (ry is None or rx < ry) for rx, ry in pairs)
            if as_good and better:
                assert i < j, (x, y)
