"""What a fault run publishes and how its outcome is checked, item by item.

The events are realistic: sections of the Python 3.11 documentation (bench/realistic_corpus.py,
30-500 words, split into passages by the indexer), the sample photos and sounds, for two tenants,
with updates, stale replays and deletes. `audit` reads every point the store holds for each tenant
(tombstones included) and compares it with what the events say the end state must be.
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from mmsearch.producer import delete_event, media_event, text_event
from mmsearch.stores.base import collection_name
from mmsearch.stores.qdrant_edge import QdrantEdgeStore
from mmsearch.v1 import common_pb2, events_pb2

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / ".cache" / "samples"
# Tenants the development tokens map to (mmsearch-dev-token, ...-tenant-b), so searches
# through the API can be checked against the store.
TENANTS = ("dev", "tenant-b")
TEXT_SPACE, AUDIO_SPACE = "minilm@1", "aisfx@1"
T0 = datetime(2026, 5, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Expected:
    """An item's end state: live at `version` with `sha256`, or deleted at `version`."""

    space: str
    tenant: str
    item_id: str
    version: int
    deleted: bool
    sha256: str


@dataclass
class Workload:
    events: list[events_pb2.ContentEvent]
    expected: list[Expected]
    # What a query for each tenant must find (the text of a live document of that tenant).
    probes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def live(self) -> int:
        return sum(1 for e in self.expected if not e.deleted)


def corpus_texts(count: int, seed: int) -> list[tuple[str, str]]:
    """`count` (title, text) sections of the realistic corpus, a seeded sample."""
    sys.path.insert(0, str(ROOT / "bench"))
    from realistic_corpus import load_corpus  # bench/ is not a package

    docs, _ = load_corpus()
    picked = random.Random(seed).sample(docs, count)
    return [(d.title, d.text) for d in picked]


def build(docs_per_tenant: tuple[int, int], seed: int = 7, media: int = 100) -> Workload:
    """Text documents for each tenant (20% updated, 10% with a stale replay after the update,
    10% deleted), up to `media` of the sample photos (14) and of the sounds (10) for the
    first tenant; event order within an item is its partition order (same key)."""
    rng = random.Random(seed)
    texts = corpus_texts(sum(docs_per_tenant) * 2, seed)
    events: list[events_pb2.ContentEvent] = []
    expected: list[Expected] = []
    probes: dict[str, list[tuple[str, str]]] = defaultdict(list)
    clock = iter(T0 + timedelta(seconds=i) for i in range(10**6))
    pool = iter(texts)
    for tenant, count in zip(TENANTS, docs_per_tenant, strict=True):
        for i in range(count):
            item = f"{tenant}-doc-{i}"
            title, text = next(pool)
            events.append(text_event(tenant, item, text, title=title, version=1, event_time=next(clock)))
            version, sha = 1, _sha(text)
            if rng.random() < 0.2:
                title, text = next(pool)
                events.append(text_event(tenant, item, text, title=title, version=2, event_time=next(clock)))
                version, sha = 2, _sha(text)
                if rng.random() < 0.5:
                    stale = f"stale replay of {item}"
                    events.append(text_event(tenant, item, stale, version=1, event_time=next(clock)))
            if rng.random() < 0.1:
                events.append(delete_event(tenant, item, version=3, event_time=next(clock)))
                expected.append(Expected(TEXT_SPACE, tenant, item, 3, True, ""))
                continue
            expected.append(Expected(TEXT_SPACE, tenant, item, version, False, sha))
            if len(probes[tenant]) < 5 and version == 1:
                probes[tenant].append((item, text))
    for kind, space, modality in (
        ("images", "", common_pb2.MODALITY_IMAGE),
        ("audio", "audio", common_pb2.MODALITY_AUDIO),
    ):
        for path in sorted((SAMPLES / kind).iterdir())[:media]:
            data = path.read_bytes()
            item = f"{kind}-{path.stem}"
            events.append(
                media_event(
                    TENANTS[0],
                    item,
                    data,
                    modality,
                    title=path.stem,
                    version=1,
                    event_time=next(clock),
                    space=space,
                )
            )
            expected.append(
                Expected(AUDIO_SPACE if space else TEXT_SPACE, TENANTS[0], item, 1, False, _sha(data))
            )
    # Interleave tenants and modalities the way independent producers would (per-item order kept).
    return Workload(_interleave(events, rng), expected, dict(probes))


def _interleave(events: list[events_pb2.ContentEvent], rng: random.Random) -> list[events_pb2.ContentEvent]:
    per_item: dict[tuple[str, str], list[events_pb2.ContentEvent]] = defaultdict(list)
    for event in events:
        per_item[(event.tenant, event.item_id)].append(event)
    queues = list(per_item.values())
    out: list[events_pb2.ContentEvent] = []
    while queues:
        queue = queues[rng.randrange(len(queues))]
        out.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return out


def _sha(value: str | bytes) -> str:
    return hashlib.sha256(value.encode("utf-8") if isinstance(value, str) else value).hexdigest()


@dataclass
class Audit:
    """The store against the events: every count is of items, each item counted once."""

    checked: int = 0
    lost: list[str] = field(default_factory=list)  # live item missing or at an older version/content
    resurrected: list[str] = field(default_factory=list)  # deleted item live again
    duplicated: list[str] = field(default_factory=list)  # stale-generation or surplus passage points
    foreign: list[str] = field(default_factory=list)  # items nobody published for that tenant/space
    points: int = 0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.resurrected or self.duplicated or self.foreign)

    def summary(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "points": self.points,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "resurrected": len(self.resurrected),
            "foreign": len(self.foreign),
            "examples": (self.lost + self.resurrected + self.duplicated + self.foreign)[:5],
        }


_FIELDS = [
    "tenant",
    "item_id",
    "head",
    "generation",
    "passages",
    "passage",
    "deleted",
    "version",
    "content_sha256",
]


async def audit(store_dir: Path, expected: Iterable[Expected]) -> Audit:
    """Open the store (its owner must have stopped) and check every point of every tenant."""
    result = Audit()
    store = QdrantEdgeStore(store_dir)
    try:
        wanted: dict[tuple[str, str], dict[str, Expected]] = defaultdict(dict)
        for item in expected:
            wanted[(item.space, item.tenant)][item.item_id] = item
        for (space, tenant), items in sorted(wanted.items()):
            points = await _points(store, collection_name(space), tenant)
            result.points += len(points)
            _check(result, f"{space}/{tenant}", items, points)
    finally:
        await store.close()
    return result


async def _points(store: QdrantEdgeStore, collection: str, tenant: str) -> list[dict[str, Any]]:
    handle = await store._get(collection)  # the audit reads raw points, tombstones too
    only_tenant = qe.Filter(must=[qe.FieldCondition("tenant", match=qe.MatchValue(tenant))])
    out: list[dict[str, Any]] = []
    offset: Any = None
    while True:
        request = qe.ScrollRequest(
            offset=offset, limit=512, filter=only_tenant, with_payload=qe.PayloadSelector.Include(_FIELDS)
        )
        records, offset = handle.shard.scroll(request)
        out.extend(dict(r.payload or {}) for r in records)
        if offset is None:
            return out


def _split(
    result: Audit, where: str, points: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[tuple[str, int]]]]:
    """Heads by item, and each item's further passages as (generation, index)."""
    heads: dict[str, dict[str, Any]] = {}
    passages: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for point in points:
        item_id = str(point.get("item_id"))
        if point.get("head", True):
            if item_id in heads:
                result.duplicated.append(f"{where}/{item_id}: two heads")
            heads[item_id] = point
        else:
            passages[item_id].append((str(point.get("generation")), int(point.get("passage", -1))))
    return heads, passages


def _check(result: Audit, where: str, items: dict[str, Expected], points: list[dict[str, Any]]) -> None:
    heads, passages = _split(result, where, points)
    # A delete names no space, so its tombstone lands in every space: only a live head is foreign.
    for item_id in sorted(set(heads) - set(items)):
        if not heads[item_id].get("deleted"):
            result.foreign.append(f"{where}/{item_id}")
    for item_id, want in items.items():
        result.checked += 1
        head = heads.get(item_id)
        if head is None:
            result.lost.append(f"{where}/{item_id}: missing")
            continue
        deleted, version = bool(head.get("deleted")), int(head.get("version", -1))
        if want.deleted:
            if not deleted:
                result.resurrected.append(f"{where}/{item_id}: live at v{version}")
            elif passages.get(item_id):
                result.duplicated.append(f"{where}/{item_id}: {len(passages[item_id])} passages after delete")
            continue
        if deleted or version != want.version or head.get("content_sha256") != want.sha256:
            result.lost.append(f"{where}/{item_id}: deleted={deleted} v{version}, want v{want.version}")
            continue
        gen, total = str(head.get("generation")), int(head.get("passages") or 0)
        got = passages.get(item_id, [])
        current = sorted(i for g, i in got if g == gen)
        if set(range(1, total)) - set(current):
            result.lost.append(f"{where}/{item_id}: passages {current[:4]}..., head says {total}")
        elif len(current) != max(total - 1, 0) or any(g != gen for g, _ in got):
            result.duplicated.append(f"{where}/{item_id}: passages {sorted(got)[:4]}..., head says {total}")
