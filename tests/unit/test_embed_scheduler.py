"""Ingest embedding sized by cost: calls within the budget, deadlines derived
from the work, split in halves past a deadline, one item past the generous
bound refused for good (never retried forever)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmsearch.clients.errors import DependencyDeadline, DependencyDown, InputRejected, RequestTooLarge
from mmsearch.indexer.embedding import (
    Cost,
    EmbedScheduler,
    WorkBudget,
    deadline_for,
    estimate,
    plan_calls,
)
from mmsearch.v1 import common_pb2, embedder_pb2

BUDGET = WorkBudget(tokens_per_call=1000, base_timeout_s=1.0, seconds_per_1k_tokens=1.0, max_timeout_s=30.0)


def text(words: int, tag: str = "w") -> common_pb2.Content:
    return common_pb2.Content(text=" ".join(f"{tag}{i}" for i in range(words)))


class SlowEmbedder:
    """Takes `seconds_per_token` per estimated token; a call whose work does not
    fit its timeout fails with DEADLINE_EXCEEDED, as a busy model server does."""

    def __init__(self, seconds_per_token: float, poison: str = "") -> None:
        self.seconds_per_token = seconds_per_token
        self.poison = poison
        self.calls: list[tuple[int, float]] = []
        self.down = False
        self.now = 0.0  # a fake clock: a successful call advances it by its work

    def clock(self) -> float:
        return self.now

    async def embed(
        self,
        space: str,
        items: Sequence[common_pb2.Content],
        timeout_s: float | None = None,
        *,
        priority: str = "interactive",
        token_vectors: bool = False,
    ) -> embedder_pb2.EmbedResponse:
        assert timeout_s is not None and priority == "bulk"  # ingest never competes with searches
        self.calls.append((len(items), timeout_s))
        if self.down:
            raise DependencyDown("embedder", "UNAVAILABLE")
        for i, item in enumerate(items):
            if self.poison and item.text.startswith(self.poison):
                raise InputRejected("embedder", f"items[{i}].text: refused", index=i, kind="invalid")
        work = sum(estimate(item).tokens for item in items) * self.seconds_per_token
        if work > timeout_s:
            self.now += timeout_s
            raise DependencyDeadline("embedder", "DEADLINE_EXCEEDED")
        self.now += work
        return embedder_pb2.EmbedResponse(
            embeddings=[embedder_pb2.Embedding(content_sha256=item.text[:8]) for item in items]
        )


def test_calls_stay_within_the_token_budget_and_keep_order() -> None:
    costs = [estimate(text(n)) for n in (100, 300, 400, 20, 700, 5, 2000)]
    calls = plan_calls(costs, BUDGET)
    assert [i for call in calls for i in call] == list(range(len(costs)))
    for call in calls:
        assert len(call) == 1 or sum(costs[i].tokens for i in call) <= BUDGET.tokens_per_call


@given(st.lists(st.integers(min_value=0, max_value=600), max_size=60))
def test_every_item_is_planned_once_in_order(words: list[int]) -> None:
    costs = [estimate(text(n)) for n in words]
    calls = plan_calls(costs, BUDGET)
    assert [i for call in calls for i in call] == list(range(len(costs)))


def test_deadline_grows_with_the_work_and_is_capped() -> None:
    assert deadline_for(Cost(tokens=0), BUDGET) == 1.0
    assert deadline_for(Cost(tokens=1000), BUDGET) == 2.0
    assert deadline_for(Cost(media_bytes=1 << 40), BUDGET) == BUDGET.max_timeout_s


async def test_a_call_past_its_deadline_is_split_until_everything_is_embedded() -> None:
    # The model is 3x slower than the budget assumes: whole calls time out, halves fit.
    embedder = SlowEmbedder(seconds_per_token=0.003)
    items = [text(60, f"d{i}-") for i in range(24)]
    out = await EmbedScheduler(embedder, BUDGET).embed("s@1", items)
    assert sorted(out.vectors) == list(range(24)) and not out.refused
    assert out.splits > 0
    assert all(timeout <= BUDGET.max_timeout_s for _, timeout in embedder.calls)


async def test_one_item_past_the_generous_bound_is_refused_not_retried_forever() -> None:
    embedder = SlowEmbedder(seconds_per_token=5.0)  # nothing fits, not even alone in 30 s
    items = [text(10, "a"), text(10, "b")]
    out = await EmbedScheduler(embedder, BUDGET).embed("s@1", items)
    assert not out.vectors
    assert {i: r.kind for i, r in out.refused.items()} == {0: None, 1: None}
    assert len(embedder.calls) <= 5  # the pair, each alone, each once more with the full bound


async def test_a_refused_item_does_not_hold_back_its_call() -> None:
    embedder = SlowEmbedder(seconds_per_token=0.0, poison="bad")
    items = [text(5, "ok"), text(5, "bad"), text(5, "ok2")]
    out = await EmbedScheduler(embedder, BUDGET).embed("s@1", items)
    assert sorted(out.vectors) == [0, 2]
    assert out.refused[1].kind == "invalid"


async def test_an_embedder_that_is_down_propagates() -> None:
    embedder = SlowEmbedder(seconds_per_token=0.0)
    embedder.down = True
    with pytest.raises(DependencyDown):
        await EmbedScheduler(embedder, BUDGET).embed("s@1", [text(5)])


class SizeLimitedEmbedder(SlowEmbedder):
    """Refuses any call of more than `max_items` as a whole (RESOURCE_EXHAUSTED naming no item)."""

    def __init__(self, max_items: int) -> None:
        super().__init__(seconds_per_token=0.0)
        self.max_items = max_items

    async def embed(
        self,
        space: str,
        items: Sequence[common_pb2.Content],
        timeout_s: float | None = None,
        *,
        priority: str = "interactive",
        token_vectors: bool = False,
    ) -> embedder_pb2.EmbedResponse:
        if len(items) > self.max_items:
            raise RequestTooLarge("embedder", "RESOURCE_EXHAUSTED: too much work in one request")
        return await super().embed(space, items, timeout_s, priority=priority)


async def test_a_request_too_large_as_a_whole_is_split_not_retried() -> None:
    embedder = SizeLimitedEmbedder(max_items=3)
    out = await EmbedScheduler(embedder, BUDGET).embed("s@1", [text(5, f"t{i}-") for i in range(10)])
    assert sorted(out.vectors) == list(range(10)) and not out.refused and out.splits > 0
    alone = await EmbedScheduler(SizeLimitedEmbedder(max_items=0), BUDGET).embed("s@1", [text(5)])
    assert alone.refused[0].kind == "over_limit"


async def test_deadlines_follow_the_pace_of_a_busy_machine() -> None:
    # 6x slower than the budget assumes (a loaded machine): the first batch splits, the pace
    # learned from its successful calls lets later batches through whole.
    embedder = SlowEmbedder(seconds_per_token=0.006)
    scheduler = EmbedScheduler(embedder, BUDGET, clock=embedder.clock)
    first = await scheduler.embed("s@1", [text(60, f"a{i}-") for i in range(24)])
    assert sorted(first.vectors) == list(range(24)) and first.splits > 0
    later = [await scheduler.embed("s@1", [text(60, f"{b}{i}-") for i in range(24)]) for b in "bcd"]
    assert all(sorted(o.vectors) == list(range(24)) for o in later)
    assert later[-1].splits == 0
    assert sum(o.splits for o in later) < first.splits
    assert scheduler.pace.slowdown > 6


def test_the_pace_never_shortens_a_deadline_and_is_bounded() -> None:
    scheduler = EmbedScheduler(SlowEmbedder(0.0), BUDGET)
    scheduler.pace.observe(estimated_s=10.0, took_s=0.1)  # a fast machine
    assert deadline_for(Cost(tokens=1000), BUDGET, scheduler.pace.slowdown) == 2.0
    for _ in range(50):
        scheduler.pace.observe(estimated_s=1.0, took_s=1e6)
    assert deadline_for(Cost(tokens=1000), BUDGET, scheduler.pace.slowdown) <= BUDGET.max_timeout_s


def test_an_image_costs_time_even_when_its_bytes_are_few() -> None:
    small = estimate(common_pb2.Content(image=common_pb2.Media(data=b"x" * 2000)))
    assert small.media_items == 1
    assert deadline_for(small, BUDGET) >= BUDGET.base_timeout_s + BUDGET.seconds_per_media_item
