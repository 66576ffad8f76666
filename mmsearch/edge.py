"""The one place where failures of dependencies become gRPC statuses.

Handlers raise the kit's ServiceErrors for what they decide themselves (bad
input, unknown space, a limit). Below them, clients raise dependency errors
(mmsearch/clients/errors.py) and stores raise store errors
(mmsearch/stores/errors.py), neither knowing about gRPC. The policy interceptor
calls `translate` on anything that is not a ServiceError, so every RPC answers
what the protos promise: UNAVAILABLE for a down embedder, reranker, model
server or store (retryable), DEADLINE_EXCEEDED when the deadline passed while
waiting on one, INVALID_ARGUMENT naming the field for a query the store refuses.
"""

from __future__ import annotations

from mmsearch.clients.errors import (
    DependencyDeadline,
    DependencyDown,
    DependencyError,
    InputRejected,
    RequestTooLarge,
)
from mmsearch.kit.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from mmsearch.stores.errors import (
    CollectionNotFound,
    InvalidQuery,
    ResourceLimit,
    StoreConflict,
    StoreError,
    StoreUnavailable,
)


def translate(exc: BaseException) -> ServiceError | None:
    """The status an exception from below the handlers means; None for a bug (INTERNAL)."""
    if isinstance(exc, DependencyDeadline):
        return DeadlineExceeded(str(exc))
    if isinstance(exc, DependencyDown):
        return Unavailable(str(exc))
    if isinstance(exc, RequestTooLarge):
        return ResourceExhausted(str(exc))
    if isinstance(exc, InputRejected):
        error = ResourceExhausted if exc.kind == "over_limit" else InvalidArgument
        return error(exc.detail)
    if isinstance(exc, DependencyError):
        return ServiceError(str(exc))  # INTERNAL: the details go to the log, not the caller
    if isinstance(exc, StoreUnavailable):
        return Unavailable(f"store: {exc}")
    if isinstance(exc, InvalidQuery):
        return InvalidArgument(str(exc))  # already "field: message"
    if isinstance(exc, CollectionNotFound):
        return NotFound(f"store: {exc}")
    if isinstance(exc, StoreConflict):
        return FailedPrecondition(f"store: {exc}")
    if isinstance(exc, ResourceLimit):
        return ResourceExhausted(f"store: {exc}")
    if isinstance(exc, StoreError):
        return ServiceError(f"store: {exc}")
    return None
