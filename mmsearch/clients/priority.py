"""Two classes of work share the model server: a caller waiting for an answer
(a search's query embedding, a caller-facing Embed, Rerank) and bulk work
nobody waits on interactively (the indexer, re-embedding). Interactive work is
served first, in Triton's queue and in the pool's in-flight bounds.

Between services the class travels as gRPC metadata, `x-mmsearch-priority:
bulk`; absent or any other value means interactive, so a caller can only ever
lower its own priority by naming it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Priority = Literal["interactive", "bulk"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "bulk")
PRIORITY_HEADER = "x-mmsearch-priority"
# Triton's priority levels (model configs: priority_levels 2); 1 is served first.
TRITON_LEVEL: dict[Priority, int] = {"interactive": 1, "bulk": 2}


def priority_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Priority:
    for key, value in metadata or ():
        if key.lower() == PRIORITY_HEADER:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            if text.strip().lower() == "bulk":
                return "bulk"
    return "interactive"
