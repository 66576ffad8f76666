"""What a call to another service (the embedder, the reranker, the model server)
can fail with, independent of how the caller reports it.

Clients raise these; one mapping at the service edge (mmsearch/edge.py) turns
them into the gRPC status each proto promises, and the indexer turns them into
"pause and retry" or a dead letter. Nothing here knows about gRPC statuses.
"""

from __future__ import annotations

from typing import Literal

RejectionKind = Literal["invalid", "corrupt_media", "over_limit"]


class DependencyError(Exception):
    """A dependency answered with an error that is neither transient nor the input's fault."""

    def __init__(self, dependency: str, message: str) -> None:
        self.dependency = dependency
        self.detail = message
        super().__init__(f"{dependency}: {message}")


class DependencyDown(DependencyError):
    """The dependency is unreachable or not ready: retryable (UNAVAILABLE)."""


class DependencyDeadline(DependencyDown):
    """The deadline passed while waiting for the dependency (DEADLINE_EXCEEDED).
    A subclass of DependencyDown: a batch consumer retries both the same way."""


class RequestTooLarge(DependencyError):
    """The dependency refused the request as a whole for its size (RESOURCE_EXHAUSTED
    naming no single input): a smaller request can succeed, the same one never will."""


class InputRejected(DependencyError):
    """The dependency refused one input (an item of a batch, or the query):
    retrying the same input cannot succeed."""

    def __init__(self, dependency: str, message: str, *, index: int, kind: RejectionKind) -> None:
        super().__init__(dependency, message)
        self.index = index
        self.kind = kind
