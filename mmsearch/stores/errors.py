"""The exceptions every store adapter raises: the store's own, independent of the
service kit (a service maps them to its status codes at its edge).

    StoreError              base of all of them
    ├── StoreUnavailable    the store is down or refused a write: retry later, nothing is lost
    ├── InvalidQuery        bad input (query, record, collection name); `field` names the culprit
    ├── ResourceLimit       a request the store cannot serve at this size (not retryable as is)
    ├── CollectionNotFound  the collection (or alias) does not exist
    └── StoreConflict       the request contradicts what the store holds (another dimension or
                            metric, an attribute kind change, an alias named like a collection,
                            an existing snapshot or restore target)
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every exception a store raises on purpose."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or refused a write: retry later, lose nothing."""


class InvalidQuery(StoreError):
    """Invalid input to the store. `field` names the offending input (e.g. "limit",
    "hybrid.rrf_k", "filter.all_of[1].condition.field") or is None; `message` (and str()) is
    "<field>: <detail>", `detail` the text without the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        self.detail = message
        self.message = f"{field}: {message}" if field else message
        super().__init__(self.message)


class ResourceLimit(StoreError):
    """The request exceeds what the store serves (e.g. exact search over too many items)."""


class CollectionNotFound(StoreError):
    """The named collection (or the collection an alias should point at) does not exist."""


class StoreConflict(StoreError):
    """The request conflicts with the store's current state; it will fail again unchanged."""
