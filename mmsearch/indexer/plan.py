"""Stage 1, plan: decode and validate each record (else dead-letter it),
resolve its space, and keep only the newest event per item in the batch.
Touches nothing but the space resolver."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mmsearch.clients.spaces import SpaceInfo
from mmsearch.indexer.batch import REASON, Record, dead_letter
from mmsearch.indexer.events import IndexEvent, Rejection, decode
from mmsearch.kit.signing import ProducerKeys
from mmsearch.v1 import events_pb2

DEFAULT_SPACE_FOR = {"text": "default", "image": "default", "audio": "audio", "document": "default"}
# What a space must encode to hold a modality (a document's children are text and images).
NEEDS = {"document": frozenset({"text", "image"})}


class Resolver(Protocol):
    """Which space a name or alias means now (mmsearch.clients.spaces.SpaceResolver)."""

    async def resolve(self, name: str) -> SpaceInfo | None: ...


@dataclass
class Pending:
    record: Record
    event: IndexEvent
    space: SpaceInfo


@dataclass
class Plan:
    # (space id, tenant) -> the newest event of each item, in first-seen order.
    groups: dict[tuple[str, str], list[Pending]] = field(default_factory=dict)
    dead_letters: list[events_pb2.DeadLetter] = field(default_factory=list)
    duplicates: int = 0


class Planner:
    def __init__(
        self,
        resolver: Resolver,
        *,
        redirect: tuple[str, SpaceInfo] | None = None,
        producers: ProducerKeys | None = None,
    ) -> None:
        """`redirect` = (source space id, target space): a re-embed job's planner,
        which keeps the source space's events only and sends them to the target.
        `producers`: each event must be signed by a producer allowed its tenant
        (None: no check, for tests of other stages)."""
        self._resolver = resolver
        self._redirect = redirect
        self._producers = producers

    async def plan(self, records: Sequence[Record]) -> Plan:
        plan = Plan()
        newest: dict[tuple[str, str, str], Pending] = {}
        # Each space name is resolved once per batch (an alias lookup in the store).
        resolved: dict[str, SpaceInfo | None] = {}
        for record in records:
            decoded = decode(record.value, record.headers)
            if isinstance(decoded, Rejection):
                plan.dead_letters.append(dead_letter(record, decoded.reason, decoded.detail))
                continue
            refusal = self._refusal(record, decoded)
            if refusal is not None:
                plan.dead_letters.append(dead_letter(record, REASON.REASON_UNAUTHORIZED, refusal))
                continue
            spaces = await self._spaces_for(decoded, resolved)
            if isinstance(spaces, Rejection):
                plan.dead_letters.append(dead_letter(record, spaces.reason, spaces.detail))
                continue
            for space in spaces:
                key = (space.id, decoded.event.tenant, decoded.event.item_id)
                current = newest.get(key)
                if current is None or decoded.order > current.event.order:
                    if current is not None:
                        plan.duplicates += 1
                    newest[key] = Pending(record, decoded, space)
                else:
                    plan.duplicates += 1
        for (space_id, tenant, _), pending in newest.items():
            plan.groups.setdefault((space_id, tenant), []).append(pending)
        return plan

    def _refusal(self, record: Record, event: IndexEvent) -> str | None:
        if self._producers is None:
            return None
        return self._producers.refusal(record.headers, record.value or b"", event.event.tenant)

    async def _spaces_for(
        self, event: IndexEvent, resolved: dict[str, SpaceInfo | None]
    ) -> list[SpaceInfo] | Rejection:
        """The spaces an event applies to: its own or its modality's default; a
        delete that names neither applies to every default space (the item may be
        in any)."""
        if event.event.space or event.kind:
            names = [event.event.space or DEFAULT_SPACE_FOR[event.kind]]
        else:
            names = sorted(set(DEFAULT_SPACE_FOR.values()))
        spaces: list[SpaceInfo] = []
        for name in names:
            if name not in resolved:
                resolved[name] = await self._resolver.resolve(name)
            space = resolved[name]
            if space is None:
                return Rejection(REASON.REASON_UNKNOWN_SPACE, f"unknown space {name!r}")
            if event.kind and not NEEDS.get(event.kind, frozenset({event.kind})) <= space.modalities:
                return Rejection(
                    REASON.REASON_UNKNOWN_SPACE, f"space {space.id} does not accept {event.kind}"
                )
            spaces.append(space)
        if self._redirect is not None:
            source, target = self._redirect
            return [target for space in spaces if space.id == source]
        return spaces
