"""Request bodies read under limits while they stream in: JSON into a proto
message, multipart uploads into parts whose kind is sniffed from the bytes.

Nothing is buffered past its limit: the count is checked per chunk, so an
oversized upload is refused (413) after at most one chunk over the limit,
whatever Content-Length claimed. A multipart body that ends before its closing
boundary is refused (400) rather than half-used.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl

from google.protobuf import json_format
from google.protobuf.message import Message
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from mmsearch.gateway.problems import Problem
from mmsearch.v1 import searcher_pb2

Kind = Literal["image", "audio", "text"]
M = TypeVar("M", bound=Message)
MAX_PARTS = 32
MAX_FIELD_BYTES = 64 * 1024
FLOAT_MAX = 3.4028234663852886e38  # the largest float32, as json_format checks


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                raise Problem(413, f"request body is over the limit of {limit} bytes")
            yield chunk
    except ClientDisconnect as exc:
        raise Problem(400, "the client closed the connection before the body was complete") from exc


async def read_json(request: Request, message: M, limit: int) -> M:
    """The body as the proto's canonical JSON mapping (camelCase or proto names)."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind not in ("application/json", ""):
        raise Problem(415, f"expected application/json, got {kind!r}")
    body = b"".join([chunk async for chunk in _limited(request, limit)])
    return parse_json(body or b"{}", message)


def parse_json(body: bytes | str, message: M, what: str = "body") -> M:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise Problem(400, f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise Problem(400, f"{what} must be a JSON object")
    vector = _take_query_vector(value) if isinstance(message, searcher_pb2.SearchRequest) else None
    try:
        json_format.ParseDict(value, message)
    except (json_format.ParseError, RecursionError) as exc:
        raise Problem(400, f"{what}: {exc}") from exc
    if vector is not None:
        message.query.vector.values.extend(vector)  # type: ignore[attr-defined]
    return message


def _take_query_vector(value: dict[str, Any]) -> list[float] | None:
    """A search's query vector, taken out of the body when it is a plain list of numbers:
    json_format converts a float in ~10 us, a third of the gateway's time on a 384-d query.
    Anything else is left for json_format to parse (and to reject with its message)."""
    query = value.get("query")
    vector = query.get("vector") if isinstance(query, dict) else None
    if not isinstance(vector, dict) or set(vector) != {"values"}:
        return None
    values = vector["values"]
    if not isinstance(values, list):
        return None
    # bool is an int subclass, and json_format refuses it; so does this fast path.
    if not all(type(v) in (float, int) and -FLOAT_MAX <= v <= FLOAT_MAX for v in values):
        return None
    del vector["values"]
    return [float(v) for v in values]


@dataclass
class Part:
    name: str
    filename: str | None = None
    content_type: str = ""
    data: bytearray = field(default_factory=bytearray)

    @property
    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Problem(400, f"form field {self.name!r} is not UTF-8") from exc


@dataclass
class Form:
    parts: list[Part]

    def files(self, name: str) -> list[Part]:
        return [p for p in self.parts if p.name == name and p.filename is not None]

    def value(self, name: str, default: str = "") -> str:
        for part in self.parts:
            if part.name == name and part.filename is None:
                return part.text
        return default


async def read_form(request: Request, limit: int) -> Form:
    """A multipart/form-data body, whole parts in memory, at most `limit` bytes in all."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind == b"application/x-www-form-urlencoded":  # fields only (curl -d, plain HTML forms)
        body = b"".join([chunk async for chunk in _limited(request, min(limit, MAX_FIELD_BYTES * 4))])
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError as exc:
            raise Problem(400, "form body is not UTF-8") from exc
        return Form([Part(name=k, data=bytearray(v.encode())) for k, v in pairs[:MAX_PARTS]])
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise Problem(415, "expected multipart/form-data with a boundary (or a urlencoded form)")
    parts: list[Part] = []
    header: dict[str, bytearray] = {"field": bytearray(), "value": bytearray()}
    headers: dict[str, str] = {}
    ended = False

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise Problem(413, f"more than {MAX_PARTS} form parts")
        headers.clear()
        parts.append(Part(name=""))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        headers[header["field"].decode("latin-1").lower()] = header["value"].decode("utf-8", "replace")
        header["field"], header["value"] = bytearray(), bytearray()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(headers.get("content-disposition", ""))
        part = parts[-1]
        part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        part.content_type = headers.get("content-type", "").split(";")[0].strip().lower()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = parts[-1]
        part.data += data[start:end]
        if part.filename is None and len(part.data) > MAX_FIELD_BYTES:
            raise Problem(413, f"form field {part.name!r} is over {MAX_FIELD_BYTES} bytes")

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(
        boundary,
        callbacks={
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_end": on_end,
        },
    )
    try:
        async for chunk in _limited(request, limit):
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise Problem(400, f"malformed multipart body: {exc}") from exc
    if not ended:
        raise Problem(400, "truncated multipart body: the closing boundary is missing")
    return Form(parts)


# Magic numbers of the formats the embedder decodes (mmsearch/kit/media.py sniffs again).
def sniff(data: bytes | bytearray) -> Kind | None:
    head = bytes(data[:16])
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")):
        return "image"
    if head.startswith((b"II*\x00", b"MM\x00*")) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if head.startswith((b"fLaC", b"OggS", b"ID3")) or (head[:4] == b"RIFF" and head[8:12] == b"WAVE"):
        return "audio"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # an MPEG audio frame sync
        return "audio"
    return None


def media_kind(part: Part, allowed: tuple[Kind, ...]) -> Kind:
    """What an uploaded file is, from its bytes (a declared type must agree)."""
    if not part.data:
        raise Problem(400, f"uploaded file {part.name!r} is empty")
    kind = sniff(part.data)
    if kind is None and "text" in allowed and part.content_type in ("", "text/plain", "text/markdown"):
        try:
            part.data.decode("utf-8")
            kind = "text"
        except UnicodeDecodeError:
            kind = None
    if kind is None or kind not in allowed:
        names = ", ".join(allowed)
        raise Problem(415, f"uploaded file {part.filename!r} is not a supported {names} file")
    declared = part.content_type.split("/")[0]
    if declared in ("image", "audio") and declared != kind:
        raise Problem(415, f"uploaded file {part.filename!r} is declared {part.content_type} but is {kind}")
    return kind
