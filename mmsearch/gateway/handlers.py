"""What each endpoint does: parse the HTTP request into the gRPC request, call
the service with the caller's token, answer the response's JSON mapping."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response

from mmsearch.gateway.bodies import Form, Part, media_kind, parse_json, read_form, read_json
from mmsearch.gateway.problems import Problem
from mmsearch.gateway.upstream import Upstream
from mmsearch.kit.auth import Principal
from mmsearch.kit.config import Settings
from mmsearch.producer import ContentProducer, delete_event, media_event, text_event
from mmsearch.v1 import common_pb2, embedder_pb2, events_pb2, indexer_pb2, searcher_pb2

SPACES_TTL_S = 30.0


def proto_response(message: Message, status: int = 200) -> Response:
    return Response(
        json_format.MessageToJson(message, indent=None), status_code=status, media_type="application/json"
    )


@dataclass
class Call:
    """One HTTP request after authentication."""

    request: Request
    principal: Principal
    token: str


@dataclass
class Gateway:
    settings: Settings
    upstream: Upstream
    _producer: ContentProducer | None = None
    _producer_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _dims: dict[str, tuple[int, float]] = field(default_factory=dict)

    # --- search -------------------------------------------------------------------------------
    async def search(self, call: Call) -> Response:
        request = await read_json(
            call.request, searcher_pb2.SearchRequest(), self.settings.gateway_max_json_bytes
        )
        return proto_response(await self.upstream.call(self.upstream.searcher.Search, request, call.token))

    async def retrieve(self, call: Call) -> Response:
        request = await read_json(
            call.request, searcher_pb2.RetrieveRequest(), self.settings.gateway_max_json_bytes
        )
        return proto_response(await self.upstream.call(self.upstream.searcher.Retrieve, request, call.token))

    async def search_upload(self, call: Call) -> Response:
        form = await read_form(call.request, self.settings.gateway_max_upload_bytes)
        (upload,) = _files(form, "file", exactly_one=True)
        request = parse_json(
            form.value("request", "{}"), searcher_pb2.SearchRequest(), "form field 'request'"
        )
        if request.HasField("query"):
            raise Problem(400, "form field 'request' must not hold a query: the uploaded file is the query")
        kind = media_kind(upload, ("image", "audio"))
        media = _media(upload, kind)
        if kind == "image":
            request.query.image.CopyFrom(media)
        else:
            request.query.audio.CopyFrom(media)
            if not request.space.name:
                request.space.name = "audio"  # sounds live in their own space (as `mmsearch search --audio`)
        return proto_response(await self.upstream.call(self.upstream.searcher.Search, request, call.token))

    # --- items --------------------------------------------------------------------------------
    async def _item(self, call: Call) -> searcher_pb2.SearchResponse:
        """The item through Search: a filter on its id, and a unit vector of the space as the
        query (any query ranks a single candidate; a vector needs no model call)."""
        item_id = call.request.path_params["item_id"]
        space = call.request.query_params.get("space", "")
        dimension = await self._dimension(space)
        request = searcher_pb2.SearchRequest(space=common_pb2.SpaceRef(name=space), top_k=1)
        request.query.vector.values.extend([1.0] + [0.0] * (dimension - 1))
        condition = request.filter.condition
        condition.field = "item_id"
        condition.eq.string_value = item_id
        response = await self.upstream.call(self.upstream.searcher.Search, request, call.token)
        if not response.hits:
            raise Problem(404, f"no item {item_id!r} in space {response.space or space!r} of your tenant")
        return response

    async def get_item(self, call: Call) -> Response:
        response = await self._item(call)
        return proto_response(response.hits[0])

    async def get_thumbnail(self, call: Call) -> Response:
        hit = (await self._item(call)).hits[0]
        if not hit.preview.thumbnail_jpeg:
            raise Problem(404, f"item {hit.item_id!r} has no thumbnail (only images have one)")
        return Response(
            hit.preview.thumbnail_jpeg,
            media_type="image/jpeg",
            headers={"cache-control": "private, max-age=60"},
        )

    async def _dimension(self, space: str) -> int:
        """The space's dimension, from ListSpaces (with the service token: spaces are not tenant
        data, and a search-only caller may not list them itself); cached briefly."""
        cached = self._dims.get(space)
        if cached is not None and time.monotonic() - cached[1] < SPACES_TTL_S:
            return cached[0]
        token = self.settings.service_token.get_secret_value()
        listed = await self.upstream.call(
            self.upstream.embedder.ListSpaces, embedder_pb2.ListSpacesRequest(), token
        )
        wanted = space or listed.default_alias
        for candidate in listed.spaces:
            if wanted in (candidate.id, *candidate.aliases):
                self._dims[space] = (candidate.dimension, time.monotonic())
                return candidate.dimension
        raise Problem(404, f"unknown space or alias {wanted!r}")

    # --- ingest -------------------------------------------------------------------------------
    async def ingest(self, call: Call) -> Response:
        form = await read_form(call.request, self.settings.gateway_max_upload_bytes)
        files = _files(form, "file", exactly_one=False)
        text = form.value("text")
        if len(files) + bool(text) != 1:
            raise Problem(400, "send exactly one of: a file part 'file', a form field 'text'")
        item_id = form.value("item_id") or (files[0].filename if files else "") or ""
        if not item_id.strip():
            raise Problem(400, "form field 'item_id' is required for text content")
        tenant = call.principal.tenant
        if text:
            event = text_event(tenant, item_id, text)
        else:
            upload = files[0]
            kind = media_kind(upload, ("image", "audio", "text"))
            if kind == "text":
                event = text_event(tenant, item_id, upload.text)
            else:
                modality = common_pb2.MODALITY_IMAGE if kind == "image" else common_pb2.MODALITY_AUDIO
                event = media_event(
                    tenant, item_id, bytes(upload.data), modality, mime_type=_media(upload, kind).mime_type
                )
        event.metadata.CopyFrom(
            common_pb2.ItemMetadata(
                title=form.value("title"),
                tags=[t.strip() for t in form.value("tags").split(",") if t.strip()],
                source=form.value("source") or "gateway",
                source_uri=form.value("source_uri"),
            )
        )
        event.version = _version(form.value("version"))
        event.space = form.value("space")
        return await self._publish(event)

    async def delete_item(self, call: Call) -> Response:
        version = _version(call.request.query_params.get("version", ""))
        event = delete_event(call.principal.tenant, call.request.path_params["item_id"], version=version)
        return await self._publish(event)

    async def _publish(self, event: events_pb2.ContentEvent) -> Response:
        producer = await self._kafka()
        try:
            partition, offset = await asyncio.to_thread(
                producer.publish_and_wait, event, self.settings.gateway_timeout_s
            )
        except Exception as exc:  # KafkaError, timeout: the broker did not take it
            raise Problem(503, f"the event was not accepted by Kafka: {type(exc).__name__}") from exc
        # The answer says where the event is: a client can wait for the indexer's offsets to pass it.
        body = json_format.MessageToDict(event)
        body.pop("content", None)  # the caller sent it; do not echo megabytes back
        body.update({"topic": producer.topic, "partition": partition, "offset": str(offset)})
        return Response(json.dumps(body), status_code=202, media_type="application/json")

    async def _kafka(self) -> ContentProducer:
        if not self.settings.kafka_bootstrap:
            raise Problem(503, "ingest is off: MMSEARCH_KAFKA_BOOTSTRAP is not set on the gateway")
        async with self._producer_lock:
            if self._producer is None:
                try:
                    self._producer = await asyncio.to_thread(
                        ContentProducer,
                        self.settings.kafka_bootstrap,
                        self.settings.content_topic,
                        producer=self.settings.gateway_producer_id,
                        secret=self.settings.gateway_producer_secret.get_secret_value(),
                    )
                except Exception as exc:  # NoBrokersAvailable
                    raise Problem(503, f"Kafka is not reachable: {type(exc).__name__}") from exc
            return self._producer

    # --- embedder -----------------------------------------------------------------------------
    async def embed(self, call: Call) -> Response:
        request = await read_json(
            call.request, embedder_pb2.EmbedRequest(), self.settings.gateway_max_json_bytes
        )
        return proto_response(await self.upstream.call(self.upstream.embedder.Embed, request, call.token))

    async def embed_upload(self, call: Call) -> Response:
        form = await read_form(call.request, self.settings.gateway_max_upload_bytes)
        request = parse_json(form.value("request", "{}"), embedder_pb2.EmbedRequest(), "form field 'request'")
        if request.items:
            raise Problem(400, "form field 'request' must not hold items: the uploaded files are the items")
        for upload in _files(form, "file", exactly_one=False):
            kind = media_kind(upload, ("image", "audio"))
            item = request.items.add()
            (item.image if kind == "image" else item.audio).CopyFrom(_media(upload, kind))
        if not request.items:
            raise Problem(400, "no file part 'file'")
        return proto_response(await self.upstream.call(self.upstream.embedder.Embed, request, call.token))

    async def extract_text(self, call: Call) -> Response:
        request = await read_json(
            call.request, embedder_pb2.ExtractTextRequest(), self.settings.gateway_max_json_bytes
        )
        return proto_response(
            await self.upstream.call(self.upstream.embedder.ExtractText, request, call.token)
        )

    async def extract_text_upload(self, call: Call) -> Response:
        form = await read_form(call.request, self.settings.gateway_max_upload_bytes)
        request = embedder_pb2.ExtractTextRequest()
        for upload in _files(form, "file", exactly_one=False):
            request.images.append(_media(upload, media_kind(upload, ("image",))))
        if not request.images:
            raise Problem(400, "no file part 'file'")
        return proto_response(
            await self.upstream.call(self.upstream.embedder.ExtractText, request, call.token)
        )

    async def list_spaces(self, call: Call) -> Response:
        stub = self.upstream.embedder
        return proto_response(
            await self.upstream.call(stub.ListSpaces, embedder_pb2.ListSpacesRequest(), call.token)
        )

    async def list_models(self, call: Call) -> Response:
        stub = self.upstream.embedder
        return proto_response(
            await self.upstream.call(stub.ListModels, embedder_pb2.ListModelsRequest(), call.token)
        )

    async def index_status(self, call: Call) -> Response:
        stub = self.upstream.indexer
        return proto_response(
            await self.upstream.call(stub.GetStatus, indexer_pb2.GetStatusRequest(), call.token)
        )

    async def list_dead_letters(self, call: Call) -> Response:
        raw = call.request.query_params.get("limit", "0")
        if not raw.isdigit() or int(raw) >= 2**32:
            raise Problem(400, f"limit must be a non-negative integer, got {raw[:40]!r}")
        request = indexer_pb2.ListDeadLettersRequest(limit=int(raw))
        return proto_response(
            await self.upstream.call(self.upstream.indexer.ListDeadLetters, request, call.token)
        )

    async def close(self) -> None:
        if self._producer is not None:
            await asyncio.to_thread(self._producer.close)
        await self.upstream.close()


def _files(form: Form, name: str, *, exactly_one: bool) -> list[Part]:
    files = form.files(name)
    if exactly_one and len(files) != 1:
        raise Problem(400, f"expected exactly one file part {name!r}, got {len(files)}")
    return files


def _media(upload: Part, kind: str) -> common_pb2.Media:
    # A declared type is passed on only when it names the sniffed kind (browsers send
    # application/octet-stream for unknown suffixes); the embedder checks it against the bytes.
    mime = upload.content_type if upload.content_type.startswith(kind + "/") else ""
    return common_pb2.Media(data=bytes(upload.data), mime_type=mime)


def _version(raw: str) -> int:
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) >= 2**64:
        raise Problem(400, f"version must be an unsigned 64-bit integer, got {raw[:40]!r}")
    return int(raw)
