"""Embedding work sized by cost, with deadlines derived from the work.

A batch of real documents is not a batch of sentences: 64 texts of 256 tokens
cost ~20x what 64 short sentences do, and a fixed per-call deadline turned that
into a livelock (the call overran, the batch was retried whole, forever). So:

- items are grouped into calls by estimated cost (tokens of text, bytes of
  images and audio), not by count;
- each call's deadline is base + its cost, capped by the generous bound; the cost's
  seconds are scaled by how much slower than the estimate this machine has been
  running (the pace: an average over recent successful calls), so a busy machine
  gets longer deadlines instead of splits that redo work (a split's abandoned
  half is never executed, but a half already executing is wasted);
- a call past its deadline is split in halves and both are retried at once,
  down to one item; one item past the generous bound is refused for good
  (the indexer dead-letters it) instead of being retried forever;
- an item the embedder refuses (corrupt, over a limit) is refused alone and
  the rest of its call is sent again.

Dependency failures that are not deadlines (embedder or model server down)
propagate: the consumer pauses and replays the batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mmsearch.clients.errors import DependencyDeadline, InputRejected, RejectionKind, RequestTooLarge
from mmsearch.clients.priority import Priority
from mmsearch.v1 import common_pb2, embedder_pb2

# The text encoder reads at most this many tokens per input (longer text is
# split into passages before it gets here); an estimate above it is capped.
MAX_TOKENS_PER_TEXT = 512


@dataclass(frozen=True)
class WorkBudget:
    tokens_per_call: int = 2048
    media_bytes_per_call: int = 8 * 1024 * 1024
    items_per_call: int = 256
    base_timeout_s: float = 2.0
    seconds_per_1k_tokens: float = 2.0
    seconds_per_media_mb: float = 2.0
    # Decoding and running the model cost per image or clip even when its bytes are few.
    seconds_per_media_item: float = 0.05
    # The most one call, and so one item, may take.
    max_timeout_s: float = 60.0


@dataclass(frozen=True)
class Cost:
    tokens: int = 0
    media_bytes: int = 0
    media_items: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.tokens + other.tokens,
            self.media_bytes + other.media_bytes,
            self.media_items + other.media_items,
        )


def estimate(content: common_pb2.Content) -> Cost:
    """A conservative cost estimate, without the model's tokenizer: WordPiece
    splits words and punctuation, so count both, plus [CLS]/[SEP]."""
    kind = content.WhichOneof("kind")
    if kind == "text":
        words = len(content.text.split())
        tokens = 2 + max(math.ceil(words * 1.4), len(content.text) // 4)
        return Cost(tokens=min(tokens, MAX_TOKENS_PER_TEXT))
    if kind in ("image", "audio"):
        return Cost(media_bytes=len(getattr(content, kind).data), media_items=1)
    return Cost(tokens=2)


def work_seconds(cost: Cost, budget: WorkBudget) -> float:
    """The estimated model time of `cost` on an unhurried machine."""
    return (
        cost.tokens / 1000 * budget.seconds_per_1k_tokens
        + cost.media_bytes / (1024 * 1024) * budget.seconds_per_media_mb
        + cost.media_items * budget.seconds_per_media_item
    )


def deadline_for(cost: Cost, budget: WorkBudget, slowdown: float = 1.0) -> float:
    """base + the work's seconds x `slowdown` (never below the estimate), capped."""
    seconds = budget.base_timeout_s + work_seconds(cost, budget) * max(1.0, slowdown)
    return min(seconds, budget.max_timeout_s)


# The pace: an average of observed / estimated seconds over successful calls (weight of the
# newest), and the margin a deadline keeps over it; bounded so one odd call cannot make
# deadlines meaningless.
PACE_WEIGHT = 0.3
PACE_MARGIN = 2.0
PACE_MAX = 20.0
# Calls estimated below this are mostly fixed overhead: they say little about the pace.
PACE_MIN_WORK_S = 0.05


class Pace:
    """How much slower than `work_seconds` estimates calls have been taking here."""

    def __init__(self) -> None:
        self.ratio = 1.0 / PACE_MARGIN  # before any call: the estimate as it is

    def observe(self, estimated_s: float, took_s: float) -> None:
        if estimated_s < PACE_MIN_WORK_S:
            return
        seen = min(PACE_MAX, max(0.0, took_s / estimated_s))
        self.ratio = (1 - PACE_WEIGHT) * self.ratio + PACE_WEIGHT * seen

    def missed(self, estimated_s: float, deadline_s: float) -> None:
        """A call past its deadline: the work is at least that slow, likely slower. Doubling
        learns a loaded machine in a few calls (a missed call's executed part is wasted)."""
        if estimated_s < PACE_MIN_WORK_S:
            return
        self.ratio = min(PACE_MAX / PACE_MARGIN, max(2 * self.ratio, deadline_s / estimated_s))

    @property
    def slowdown(self) -> float:
        return min(PACE_MAX, PACE_MARGIN * self.ratio)


def plan_calls(costs: Sequence[Cost], budget: WorkBudget) -> list[list[int]]:
    """Consecutive groups of item indexes, each within the per-call budget
    (an item over the budget on its own gets a call of its own)."""
    calls: list[list[int]] = []
    current: list[int] = []
    total = Cost()
    for index, cost in enumerate(costs):
        grown = total + cost
        over = (
            grown.tokens > budget.tokens_per_call
            or grown.media_bytes > budget.media_bytes_per_call
            or len(current) >= budget.items_per_call
        )
        if current and over:
            calls.append(current)
            current, total = [], Cost()
            grown = cost
        current.append(index)
        total = grown
    if current:
        calls.append(current)
    return calls


class Embedder(Protocol):
    """The embedder as ingest calls it (mmsearch.clients.embedder.EmbedderClient)."""

    async def embed(
        self,
        space: str,
        items: Sequence[common_pb2.Content],
        timeout_s: float | None = None,
        *,
        priority: Priority = "interactive",
        token_vectors: bool = False,
    ) -> embedder_pb2.EmbedResponse:
        """Raises InputRejected for a bad item, DependencyDown when unavailable."""


@dataclass(frozen=True)
class Refusal:
    kind: RejectionKind | None  # None: past the generous bound (unprocessable)
    detail: str


@dataclass
class Embedded:
    vectors: dict[int, embedder_pb2.Embedding]
    refused: dict[int, Refusal]
    calls: int = 0
    splits: int = 0


class EmbedScheduler:
    def __init__(
        self,
        embedder: Embedder,
        budget: WorkBudget,
        *,
        token_vectors: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`token_vectors`: ask for texts' stored-rerank blobs in the same model pass."""
        self._embedder = embedder
        self._budget = budget
        self._token_vectors = token_vectors
        self._clock = clock
        self.pace = Pace()

    async def embed(self, space: str, items: Sequence[common_pb2.Content]) -> Embedded:
        """Every item ends embedded or refused; raises only when the embedder is down."""
        costs = [estimate(item) for item in items]
        out = Embedded({}, {})
        for call in plan_calls(costs, self._budget):
            await self._call(space, items, costs, call, out)
        return out

    async def _call(
        self,
        space: str,
        items: Sequence[common_pb2.Content],
        costs: Sequence[Cost],
        indexes: list[int],
        out: Embedded,
        *,
        escalated: bool = False,
    ) -> None:
        pending = list(indexes)
        while pending:
            cost = sum((costs[i] for i in pending), Cost())
            timeout_s = (
                self._budget.max_timeout_s
                if escalated
                else deadline_for(cost, self._budget, self.pace.slowdown)
            )
            out.calls += 1
            started = self._clock()
            try:
                # Ingest is bulk work: queued behind searches at the model server.
                batch = [items[i] for i in pending]
                response = await self._embedder.embed(
                    space, batch, timeout_s=timeout_s, priority="bulk", token_vectors=self._token_vectors
                )
            except InputRejected as rejected:
                bad = pending.pop(rejected.index)
                out.refused[bad] = Refusal(rejected.kind, rejected.detail)
                continue
            except (DependencyDeadline, RequestTooLarge) as exc:
                too_large = isinstance(exc, RequestTooLarge)
                if not too_large:
                    self.pace.missed(work_seconds(cost, self._budget), timeout_s)
                if len(pending) > 1:
                    out.splits += 1
                    half = len(pending) // 2
                    await self._call(space, items, costs, pending[:half], out, escalated=escalated)
                    await self._call(space, items, costs, pending[half:], out, escalated=escalated)
                elif too_large:
                    out.refused[pending[0]] = Refusal("over_limit", f"too large on its own: {exc.detail}")
                elif not escalated and timeout_s < self._budget.max_timeout_s:
                    await self._call(space, items, costs, pending, out, escalated=True)
                else:
                    out.refused[pending[0]] = Refusal(
                        None, f"not embedded within {timeout_s:.0f} s on its own: {exc.detail}"
                    )
                return
            self.pace.observe(work_seconds(cost, self._budget), self._clock() - started)
            for index, embedding in zip(pending, response.embeddings, strict=True):
                out.vectors[index] = embedding
            return
