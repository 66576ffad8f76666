"""The fault suite's store audit (tests/faults/workload.py) flags each kind of damage:
a lost or stale item, a resurrected delete, surplus or stale-generation passages, an item
nobody published; and accepts the intact state, including a delete's tombstones in other
spaces."""

from __future__ import annotations

from typing import Any

from tests.faults.workload import Audit, Expected, _check

SHA = "a" * 64


def head(
    item: str, *, version: int = 1, deleted: bool = False, passages: int = 0, gen: str = "g1"
) -> dict[str, Any]:
    return {
        "item_id": item,
        "head": True,
        "version": version,
        "deleted": deleted,
        "content_sha256": "" if deleted else SHA,
        "passages": passages,
        "generation": gen,
    }


def passage(item: str, index: int, gen: str = "g1") -> dict[str, Any]:
    return {"item_id": item, "head": False, "generation": gen, "passage": index}


EXPECTED = {
    "a": Expected("minilm@1", "dev", "a", 2, False, SHA),
    "b": Expected("minilm@1", "dev", "b", 3, True, ""),
}


def audit(points: list[dict[str, Any]]) -> Audit:
    result = Audit()
    _check(result, "minilm@1/dev", EXPECTED, points)
    return result


def test_the_intact_state_passes() -> None:
    result = audit(
        [
            head("a", version=2, passages=3),
            passage("a", 1),
            passage("a", 2),
            head("b", version=3, deleted=True),
        ]
    )
    assert result.ok and result.checked == 2


def test_a_tombstone_of_an_unpublished_space_item_is_not_foreign() -> None:
    points = [head("a", version=2), head("b", version=3, deleted=True), head("x", deleted=True)]
    assert audit(points).ok


def test_each_kind_of_damage_is_counted() -> None:
    assert audit([head("b", version=3, deleted=True)]).lost == ["minilm@1/dev/a: missing"]
    assert audit([head("a", version=1), head("b", version=3, deleted=True)]).lost
    assert audit([head("a", version=2), head("b", version=1)]).resurrected
    stale = [head("a", version=2, passages=2, gen="g2"), passage("a", 1, "g2"), passage("a", 1, "g1")]
    assert audit([*stale, head("b", version=3, deleted=True)]).duplicated
    missing_passage = [head("a", version=2, passages=3), passage("a", 1), head("b", version=3, deleted=True)]
    assert audit(missing_passage).lost  # a passage the head counts is missing
    assert audit([head("a", version=2), head("b", version=3, deleted=True), head("x")]).foreign
