"""Kafka records -> validated ContentEvents, or a dead-letter reason.

Producers publish protobuf (`content-type: application/x-protobuf`, the
default when the header is absent) or the proto's canonical JSON mapping
(`content-type: application/json`), so any language can publish. Anything
that cannot become a valid event is rejected with a DeadLetter reason; the
partition keeps moving.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from mmsearch.v1 import common_pb2, events_pb2

CONTENT_TYPE = "content-type"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_ITEM_ID_BYTES = 256
MAX_TENANT_BYTES = 128
# Metadata limits: every field is bounded before the store sees it.
MAX_TAGS = 64
MAX_TAG_BYTES = 256
MAX_TITLE_BYTES = 2048
MAX_SOURCE_BYTES = 256
MAX_SOURCE_URI_BYTES = 4096
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_NAME_BYTES = 64
MAX_ATTRIBUTE_STRING_BYTES = 4096
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KIND_FOR_MODALITY: dict[int, str] = {
    common_pb2.MODALITY_TEXT: "text",
    common_pb2.MODALITY_IMAGE: "image",
    common_pb2.MODALITY_AUDIO: "audio",
    common_pb2.MODALITY_DOCUMENT: "document",
}


@dataclass(frozen=True)
class Rejection:
    reason: events_pb2.DeadLetter.Reason.ValueType
    detail: str


@dataclass(frozen=True)
class IndexEvent:
    event: events_pb2.ContentEvent
    event_time: datetime
    # "text" | "image" | "audio" | "document" for upserts; "" for deletes.
    kind: str

    @property
    def is_delete(self) -> bool:
        return self.event.operation == events_pb2.ContentEvent.OPERATION_DELETE

    @property
    def order(self) -> tuple[int, datetime]:
        """Newer wins: the producer's version first, then event time."""
        return (self.event.version, self.event_time)


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str:
    for key, value in headers or ():
        if key.lower() == name:
            return value.decode("utf-8", "replace").strip().lower()
    return ""


def decode(value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> IndexEvent | Rejection:
    if not value:
        return Rejection(events_pb2.DeadLetter.REASON_UNDECODABLE, "empty record value")
    content_type = header(headers, CONTENT_TYPE).split(";")[0].strip() or PROTOBUF
    event = events_pb2.ContentEvent()
    try:
        if content_type == JSON:
            json_format.Parse(value.decode("utf-8"), event)
        elif content_type == PROTOBUF:
            event.ParseFromString(value)
        else:
            return Rejection(
                events_pb2.DeadLetter.REASON_UNDECODABLE, f"unsupported content-type {content_type!r}"
            )
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return Rejection(
            events_pb2.DeadLetter.REASON_UNDECODABLE, f"not a ContentEvent ({content_type}): {exc}"
        )
    return validate(event)


def validate(event: events_pb2.ContentEvent) -> IndexEvent | Rejection:
    def invalid(detail: str) -> Rejection:
        return Rejection(events_pb2.DeadLetter.REASON_INVALID_EVENT, detail)

    if not event.event_id:
        return invalid("event_id is required")
    if not event.tenant or len(event.tenant.encode()) > MAX_TENANT_BYTES:
        return invalid(f"tenant is required, at most {MAX_TENANT_BYTES} bytes")
    if not event.item_id or len(event.item_id.encode()) > MAX_ITEM_ID_BYTES:
        return invalid(f"item_id is required, at most {MAX_ITEM_ID_BYTES} bytes")
    if not event.HasField("event_time"):
        return invalid("event_time is required")
    try:
        event_time = event.event_time.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        return invalid("event_time is out of range")
    if event.operation == events_pb2.ContentEvent.OPERATION_DELETE:
        return IndexEvent(event, event_time, "")
    problem = metadata_problem(event.metadata)
    if problem is not None:
        return invalid(problem)
    if event.operation != events_pb2.ContentEvent.OPERATION_UPSERT:
        return invalid("operation must be UPSERT or DELETE")
    kind = KIND_FOR_MODALITY.get(event.modality)
    if kind is None:
        return invalid("modality must be TEXT, IMAGE, AUDIO or DOCUMENT for an upsert")
    content_kind: str | None = event.content.WhichOneof("kind")
    if content_kind != kind:
        return invalid(f"modality is {kind} but content is {content_kind or 'empty'}")
    if kind == "text" and not event.content.text.strip():
        return invalid("content.text is empty")
    if kind != "text" and not getattr(event.content, kind).data:
        return invalid(f"content.{kind}.data is empty")
    return IndexEvent(event, event_time, kind)


def _timestamp_problem(stamp: Timestamp, field: str) -> str | None:
    try:
        stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return f"{field} is out of range (years 1 to 9999)"
    return None


def metadata_problem(metadata: common_pb2.ItemMetadata) -> str | None:
    """What is wrong with an event's metadata, naming the field; None when valid.
    Everything the store and the filters will see is checked here, so no value
    can fail later, after the event was accepted (and stop its partition)."""
    if len(metadata.tags) > MAX_TAGS:
        return f"metadata.tags: at most {MAX_TAGS} tags"
    for i, tag in enumerate(metadata.tags):
        if not tag or len(tag.encode()) > MAX_TAG_BYTES:
            return f"metadata.tags[{i}]: 1 to {MAX_TAG_BYTES} bytes"
    for name, value, limit in (
        ("title", metadata.title, MAX_TITLE_BYTES),
        ("source", metadata.source, MAX_SOURCE_BYTES),
        ("source_uri", metadata.source_uri, MAX_SOURCE_URI_BYTES),
    ):
        if len(value.encode()) > limit:
            return f"metadata.{name}: at most {limit} bytes"
    if metadata.HasField("created_at"):
        problem = _timestamp_problem(metadata.created_at, "metadata.created_at")
        if problem:
            return problem
    if len(metadata.attributes) > MAX_ATTRIBUTES:
        return f"metadata.attributes: at most {MAX_ATTRIBUTES}"
    for name, attribute in metadata.attributes.items():
        problem = _attribute_problem(name, attribute)
        if problem:
            return problem
    return None


def _attribute_problem(name: str, value: common_pb2.Value) -> str | None:
    field = f"metadata.attributes[{name[:MAX_ATTRIBUTE_NAME_BYTES]!r}]"
    if len(name.encode()) > MAX_ATTRIBUTE_NAME_BYTES or not ATTRIBUTE_NAME.match(name):
        return f"{field}: a name is a letter or '_' then letters, digits or '_', at most 64 bytes"
    which = value.WhichOneof("kind")
    if which is None:
        return f"{field}: no value"
    if which == "double_value" and not math.isfinite(value.double_value):
        return f"{field}: must be finite (not NaN or infinity)"
    if which == "string_value" and len(value.string_value.encode()) > MAX_ATTRIBUTE_STRING_BYTES:
        return f"{field}: at most {MAX_ATTRIBUTE_STRING_BYTES} bytes"
    if which == "timestamp_value":
        return _timestamp_problem(value.timestamp_value, field)
    return None
