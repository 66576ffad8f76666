"""Publishing content events for users: a small producer helper and what
`mmsearch ingest PATH...` uses to bulk-load files.

    from mmsearch.producer import ContentProducer, text_event
    with ContentProducer("127.0.0.1:9092") as producer:
        producer.publish(text_event("tenant-a", "doc-1", "Hello world", title="Greeting"))

Events are keyed by "tenant/item_id" so that every change to an item lands on
the same partition, in order. The W3C trace context of the caller travels in
the record headers to the indexer's store write.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from google.protobuf import json_format
from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata
from opentelemetry import propagate

from mmsearch.kit.signing import DEV_PRODUCER, DEV_PRODUCER_SECRET, signed_headers
from mmsearch.v1 import common_pb2, events_pb2

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif"}
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".text"}
DOCUMENT_SUFFIXES = {".pdf"}


def _base(tenant: str, item_id: str, *, version: int, event_time: datetime | None) -> events_pb2.ContentEvent:
    event = events_pb2.ContentEvent(
        event_id=str(uuid.uuid4()), tenant=tenant, item_id=item_id, version=version
    )
    event.event_time.FromDatetime(event_time or datetime.now(UTC))
    return event


def text_event(
    tenant: str,
    item_id: str,
    text: str,
    *,
    title: str = "",
    tags: Iterable[str] = (),
    source: str = "",
    source_uri: str = "",
    version: int = 0,
    event_time: datetime | None = None,
    space: str = "",
) -> events_pb2.ContentEvent:
    event = _base(tenant, item_id, version=version, event_time=event_time)
    event.operation = events_pb2.ContentEvent.OPERATION_UPSERT
    event.modality = common_pb2.MODALITY_TEXT
    event.content.text = text
    event.content_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    event.metadata.CopyFrom(
        common_pb2.ItemMetadata(title=title, tags=list(tags), source=source, source_uri=source_uri)
    )
    event.space = space
    return event


def media_event(
    tenant: str,
    item_id: str,
    data: bytes,
    modality: common_pb2.Modality.ValueType,
    *,
    mime_type: str = "",
    title: str = "",
    tags: Iterable[str] = (),
    source: str = "",
    source_uri: str = "",
    version: int = 0,
    event_time: datetime | None = None,
    space: str = "",
) -> events_pb2.ContentEvent:
    event = _base(tenant, item_id, version=version, event_time=event_time)
    event.operation = events_pb2.ContentEvent.OPERATION_UPSERT
    event.modality = modality
    media = common_pb2.Media(data=data, mime_type=mime_type)
    if modality == common_pb2.MODALITY_IMAGE:
        event.content.image.CopyFrom(media)
    elif modality == common_pb2.MODALITY_DOCUMENT:
        event.content.document.CopyFrom(media)
    else:
        event.content.audio.CopyFrom(media)
    event.content_sha256 = hashlib.sha256(data).hexdigest()
    event.metadata.CopyFrom(
        common_pb2.ItemMetadata(title=title, tags=list(tags), source=source, source_uri=source_uri)
    )
    event.space = space
    return event


def delete_event(
    tenant: str, item_id: str, *, version: int = 0, event_time: datetime | None = None
) -> events_pb2.ContentEvent:
    event = _base(tenant, item_id, version=version, event_time=event_time)
    event.operation = events_pb2.ContentEvent.OPERATION_DELETE
    return event


def file_event(
    tenant: str, path: Path, *, item_id: str | None = None, tags: Iterable[str] = ()
) -> events_pb2.ContentEvent:
    """An upsert for a file, its modality from the suffix; the item id defaults to the path."""
    suffix = path.suffix.lower()
    item = item_id or str(path)
    uri = path.resolve().as_uri()
    if suffix in TEXT_SUFFIXES:
        return text_event(
            tenant, item, path.read_text("utf-8"), title=path.stem, tags=tags, source="file", source_uri=uri
        )
    mime = mimetypes.guess_type(path.name)[0] or ""
    if suffix in IMAGE_SUFFIXES:
        modality = common_pb2.MODALITY_IMAGE
    elif suffix in AUDIO_SUFFIXES:
        modality = common_pb2.MODALITY_AUDIO
    elif suffix in DOCUMENT_SUFFIXES:
        modality, mime = common_pb2.MODALITY_DOCUMENT, "application/pdf"
    else:
        raise ValueError(f"{path}: unknown file type {suffix!r} (text, image, audio or PDF suffixes only)")
    return media_event(
        tenant,
        item,
        path.read_bytes(),
        modality,
        mime_type=mime,
        title=path.stem,
        tags=tags,
        source="file",
        source_uri=uri,
    )


def expand(paths: Iterable[Path]) -> Iterator[Path]:
    """Files under the given paths (directories recursively), known suffixes only."""
    known = IMAGE_SUFFIXES | AUDIO_SUFFIXES | TEXT_SUFFIXES | DOCUMENT_SUFFIXES
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in known)
        else:
            yield path


class ContentProducer:
    """Publishes ContentEvents (protobuf, or the canonical JSON mapping) with an
    idempotent-style acks=all producer; `flush()` waits for every ack."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = "content.v1",
        *,
        as_json: bool = False,
        producer: str | None = None,
        secret: str | None = None,
    ) -> None:
        """`producer` / `secret`: this producer's key (docs/security.md); default
        MMSEARCH_CLIENT_PRODUCER / MMSEARCH_CLIENT_PRODUCER_SECRET, else the local
        stack's development key."""
        self.topic = topic
        self._as_json = as_json
        self._producer_id = producer or os.environ.get("MMSEARCH_CLIENT_PRODUCER", DEV_PRODUCER)
        self._secret = secret or os.environ.get("MMSEARCH_CLIENT_PRODUCER_SECRET", DEV_PRODUCER_SECRET)
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=20, retries=5, max_request_size=64 << 20
        )
        self._pending: list[FutureRecordMetadata] = []

    def publish(self, event: events_pb2.ContentEvent) -> None:
        self._pending.append(self._send(event))

    def publish_and_wait(self, event: events_pb2.ContentEvent, timeout_s: float = 30.0) -> tuple[int, int]:
        """Publish one event and wait for the broker's ack (the HTTP gateway answers
        each upload with where it landed); returns (partition, offset)."""
        metadata = self._send(event).get(timeout=timeout_s)
        return int(metadata.partition), int(metadata.offset)

    def _send(self, event: events_pb2.ContentEvent) -> FutureRecordMetadata:
        headers: dict[str, str] = {}
        propagate.inject(headers)
        if self._as_json:
            value = json_format.MessageToJson(event, indent=None).encode("utf-8")
            content_type = b"application/json"
        else:
            value = event.SerializeToString()
            content_type = b"application/x-protobuf"
        future: FutureRecordMetadata = self._producer.send(
            self.topic,
            key=f"{event.tenant}/{event.item_id}".encode(),
            value=value,
            headers=[
                ("content-type", content_type),
                *signed_headers(self._producer_id, self._secret, value),
                *((k, v.encode()) for k, v in headers.items()),
            ],
        )
        return future

    def flush(self, timeout_s: float = 60.0) -> dict[int, int]:
        """Wait until the broker acked every published event (raises KafkaError
        otherwise); returns the last offset written per partition, so a caller
        can wait until the indexer has committed past them."""
        self._producer.flush(timeout=timeout_s)
        pending, self._pending = self._pending, []
        last: dict[int, int] = {}
        for future in pending:
            metadata = future.get(timeout=timeout_s)
            last[metadata.partition] = max(last.get(metadata.partition, -1), metadata.offset)
        return last

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer.close(5)

    def __enter__(self) -> ContentProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
