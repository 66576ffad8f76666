"""Kafka records -> validated ContentEvents, or a dead-letter reason.

Producers publish protobuf (`content-type: application/x-protobuf`, the
default when the header is absent) or the proto's canonical JSON mapping
(`content-type: application/json`), so any language can publish. Anything
that cannot become a valid event is rejected with a DeadLetter reason; the
partition keeps moving.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from mmsearch.v1 import common_pb2, events_pb2

CONTENT_TYPE = "content-type"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_ITEM_ID_BYTES = 256
MAX_TENANT_BYTES = 128
KIND_FOR_MODALITY: dict[int, str] = {
    common_pb2.MODALITY_TEXT: "text",
    common_pb2.MODALITY_IMAGE: "image",
    common_pb2.MODALITY_AUDIO: "audio",
}


@dataclass(frozen=True)
class Rejection:
    reason: events_pb2.DeadLetter.Reason.ValueType
    detail: str


@dataclass(frozen=True)
class IndexEvent:
    event: events_pb2.ContentEvent
    event_time: datetime
    # "text" | "image" | "audio" for upserts; "" for deletes.
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
    if event.operation != events_pb2.ContentEvent.OPERATION_UPSERT:
        return invalid("operation must be UPSERT or DELETE")
    kind = KIND_FOR_MODALITY.get(event.modality)
    if kind is None:
        return invalid("modality must be TEXT, IMAGE or AUDIO for an upsert")
    content_kind: str | None = event.content.WhichOneof("kind")
    if content_kind != kind:
        return invalid(f"modality is {kind} but content is {content_kind or 'empty'}")
    if kind == "text" and not event.content.text.strip():
        return invalid("content.text is empty")
    if kind != "text" and not getattr(event.content, kind).data:
        return invalid(f"content.{kind}.data is empty")
    return IndexEvent(event, event_time, kind)
