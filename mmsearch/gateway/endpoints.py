"""The gateway's endpoints, declared once: the app routes them and the OpenAPI
document is generated from the same table (mmsearch/gateway/openapi.py), so
the two cannot drift apart. Each names the gRPC method it fronts and the role
it needs; bodies are the protos' canonical JSON mapping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from google.protobuf.message import Message

from mmsearch.kit.auth import ROLE_EMBED, ROLE_INDEX_ADMIN, ROLE_SEARCH
from mmsearch.v1 import embedder_pb2, events_pb2, indexer_pb2, searcher_pb2


@dataclass(frozen=True)
class Param:
    name: str
    where: Literal["path", "query"]
    description: str
    required: bool = False


@dataclass(frozen=True)
class FormField:
    name: str
    description: str
    file: bool = False
    # A JSON form field holding this message (the request's other fields).
    message: type[Message] | None = None
    required: bool = False
    repeated: bool = False


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    operation: str
    summary: str
    role: str
    # The gRPC method whose request this endpoint exposes ("/mmsearch.v1.Searcher/Search").
    rpc: str = ""
    body: Literal["none", "json", "multipart"] = "none"
    request: type[Message] | None = None
    response: type[Message] | None = None
    # Non-JSON answers (a JPEG thumbnail).
    response_media: str = "application/json"
    status: int = 200
    params: tuple[Param, ...] = ()
    form: tuple[FormField, ...] = ()
    tags: tuple[str, ...] = field(default=())


SPACE_PARAM = Param("space", "query", "Space name@version or alias; empty: the default alias.")
ITEM_PARAM = Param("item_id", "path", "The item's id (as published).", required=True)
SEARCH_FORM = (
    FormField("file", "The query: an image or a sound (sniffed from the bytes).", file=True, required=True),
    FormField(
        "request",
        "The rest of the SearchRequest as JSON (space, filter, modalities, topK, pageToken, hybrid, "
        "rerank, includeVectors); without `query`. A sound searches the `audio` space unless one is named.",
        message=searcher_pb2.SearchRequest,
    ),
)
INGEST_FORM = (
    FormField("file", "The content: an image, a sound or a UTF-8 text file.", file=True),
    FormField("text", "Text content, instead of a file."),
    FormField("item_id", "The item's id; default: the file name.", required=False),
    FormField("title", "Title (shown in results, searched by BM25)."),
    FormField("tags", "Comma-separated tags."),
    FormField("source", "Where the item came from."),
    FormField("source_uri", "Link to the original."),
    FormField("space", "Space to index into; empty: the modality's default."),
    FormField("version", "Item version (later versions win); default: ordered by event time."),
)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/v1/search",
        "search",
        "Search by text, vector, filters; hybrid, rerank, pages.",
        ROLE_SEARCH,
        "/mmsearch.v1.Searcher/Search",
        "json",
        searcher_pb2.SearchRequest,
        searcher_pb2.SearchResponse,
        tags=("search",),
    ),
    Endpoint(
        "POST",
        "/v1/retrieve",
        "retrieve",
        "Evidence for a generator: text passages and visual chunks, grouped, with citations.",
        ROLE_SEARCH,
        "/mmsearch.v1.Searcher/Retrieve",
        "json",
        searcher_pb2.RetrieveRequest,
        searcher_pb2.RetrieveResponse,
        tags=("search",),
    ),
    Endpoint(
        "POST",
        "/v1/search/upload",
        "searchUpload",
        "Search with an uploaded image or sound.",
        ROLE_SEARCH,
        "/mmsearch.v1.Searcher/Search",
        "multipart",
        None,
        searcher_pb2.SearchResponse,
        form=SEARCH_FORM,
        tags=("search",),
    ),
    Endpoint(
        "GET",
        "/v1/items/{item_id}",
        "getItem",
        "One item of the caller's tenant: metadata, preview.",
        ROLE_SEARCH,
        "",
        response=searcher_pb2.Hit,
        params=(ITEM_PARAM, SPACE_PARAM),
        tags=("items",),
    ),
    Endpoint(
        "GET",
        "/v1/items/{item_id}/thumbnail",
        "getThumbnail",
        "An image item's JPEG thumbnail.",
        ROLE_SEARCH,
        "",
        response_media="image/jpeg",
        params=(ITEM_PARAM, SPACE_PARAM),
        tags=("items",),
    ),
    Endpoint(
        "DELETE",
        "/v1/items/{item_id}",
        "deleteItem",
        "Delete an item (a delete event through Kafka).",
        ROLE_INDEX_ADMIN,
        "",
        response=events_pb2.ContentEvent,
        status=202,
        params=(ITEM_PARAM, Param("version", "query", "Version of the delete (later versions win).")),
        tags=("ingest",),
    ),
    Endpoint(
        "POST",
        "/v1/ingest",
        "ingest",
        "Publish an upload as a signed ContentEvent to Kafka.",
        ROLE_INDEX_ADMIN,
        "",
        "multipart",
        response=events_pb2.ContentEvent,
        status=202,
        form=INGEST_FORM,
        tags=("ingest",),
    ),
    Endpoint(
        "POST",
        "/v1/embed",
        "embed",
        "Embed items (text, base64 media, vectors) into a space.",
        ROLE_EMBED,
        "/mmsearch.v1.Embedder/Embed",
        "json",
        embedder_pb2.EmbedRequest,
        embedder_pb2.EmbedResponse,
        tags=("embed",),
    ),
    Endpoint(
        "POST",
        "/v1/embed/upload",
        "embedUpload",
        "Embed uploaded images or sounds.",
        ROLE_EMBED,
        "/mmsearch.v1.Embedder/Embed",
        "multipart",
        None,
        embedder_pb2.EmbedResponse,
        form=(
            FormField("file", "Images or sounds, in order.", file=True, required=True, repeated=True),
            FormField(
                "request", "The rest of the EmbedRequest as JSON (space).", message=embedder_pb2.EmbedRequest
            ),
        ),
        tags=("embed",),
    ),
    Endpoint(
        "POST",
        "/v1/extract-text",
        "extractText",
        "Text shown in images (OCR), base64 images.",
        ROLE_EMBED,
        "/mmsearch.v1.Embedder/ExtractText",
        "json",
        embedder_pb2.ExtractTextRequest,
        embedder_pb2.ExtractTextResponse,
        tags=("embed",),
    ),
    Endpoint(
        "POST",
        "/v1/extract-text/upload",
        "extractTextUpload",
        "Text shown in uploaded images (OCR).",
        ROLE_EMBED,
        "/mmsearch.v1.Embedder/ExtractText",
        "multipart",
        None,
        embedder_pb2.ExtractTextResponse,
        form=(FormField("file", "Images, in order.", file=True, required=True, repeated=True),),
        tags=("embed",),
    ),
    Endpoint(
        "GET",
        "/v1/spaces",
        "listSpaces",
        "Embedding spaces and their aliases.",
        ROLE_EMBED,
        "/mmsearch.v1.Embedder/ListSpaces",
        "none",
        embedder_pb2.ListSpacesRequest,
        embedder_pb2.ListSpacesResponse,
        tags=("embed",),
    ),
    Endpoint(
        "GET",
        "/v1/models",
        "listModels",
        "Encoder models and their readiness.",
        ROLE_EMBED,
        "/mmsearch.v1.Embedder/ListModels",
        "none",
        embedder_pb2.ListModelsRequest,
        embedder_pb2.ListModelsResponse,
        tags=("embed",),
    ),
    Endpoint(
        "GET",
        "/v1/index/status",
        "indexStatus",
        "Ingest status: lag, pause and why, dead letters.",
        ROLE_INDEX_ADMIN,
        "/mmsearch.v1.IndexerAdmin/GetStatus",
        "none",
        indexer_pb2.GetStatusRequest,
        indexer_pb2.GetStatusResponse,
        tags=("index",),
    ),
    Endpoint(
        "GET",
        "/v1/index/dead-letters",
        "listDeadLetters",
        "Your tenant's recent dead letters: reason, detail, event id, original size.",
        ROLE_INDEX_ADMIN,
        "/mmsearch.v1.IndexerAdmin/ListDeadLetters",
        "none",
        indexer_pb2.ListDeadLettersRequest,
        indexer_pb2.ListDeadLettersResponse,
        params=(Param("limit", "query", "At most this many (default 50, at most 1000)."),),
        tags=("index",),
    ),
)

# gRPC methods deliberately not on HTTP (the OpenAPI check requires a reason for each).
NOT_EXPOSED: dict[str, str] = {
    "/mmsearch.v1.Reranker/Rerank": "called by the searcher; use /v1/search with rerank",
    "/mmsearch.v1.Reranker/EncodeDocuments": "called by the indexer at ingest",
    "/mmsearch.v1.IndexerAdmin/StartReembed": "operator action: grpcurl or the CLI",
    "/mmsearch.v1.IndexerAdmin/GetReembed": "operator action: grpcurl or the CLI",
    "/mmsearch.v1.IndexerAdmin/SwapAlias": "operator action: grpcurl or the CLI",
    "/mmsearch.v1.IndexerAdmin/DropSpace": "operator action: grpcurl or the CLI",
}

Handler = Callable[..., Awaitable[object]]
