"""Hypothesis strategies for hostile requests and events.

`messages(descriptor)` fills any protobuf message from its descriptor, field by
field, with the values a hostile caller sends: extreme numbers, NaN and
infinities, unknown enum numbers, empty, blank, huge and odd Unicode strings,
names the services know (so a random request reaches past the first check),
and media whose header claims more than its bytes hold (a 75-byte PNG of
1 x 50,000,000 pixels, a 7000 x 7000 page of zeros, a WAV declaring hours),
beside real samples. `mutated(raw)` flips, cuts and splices valid encodings.
"""

from __future__ import annotations

import functools
import struct
import zlib
from pathlib import Path
from typing import Any

from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message_factory
from google.protobuf.message import Message
from hypothesis import strategies as st

FD = pb_descriptor.FieldDescriptor
SAMPLES = Path(__file__).resolve().parents[2] / ".cache" / "samples"
MAX_DEPTH = 5

KNOWN_NAMES = (
    "default", "text", "image", "audio", "minilm@1", "aisfx@1", "minilm@2", "minilm@0", "minilm@",
    "@1", "minilm@99999999999999999999", "minilm@-1", "minilm_maxsim_rerank", "minilm_l6_text",
    "tags", "source", "created_at", "event_time", "modality", "item_id", "tenant", "attributes.score",
    "attributes.", "attributes.x.y", "dev", "tenant-b", "job-1",
)  # fmt: skip
ODD_STRINGS = (
    "", " ", "\t\n", "\x00", "\x00" * 64, "a" * 5000, "x" * 70_000, "é" * 3000, "😀" * 500,
    "\u202e\u0000\ufeff", "' OR 1=1 --", "{\"$where\": 1}", "../../etc/passwd", "%s%n%x",
    "word " * 20_000,
)  # fmt: skip
INT_EDGES = (0, 1, -1, 2, 7, 100, 1001, 10_000, 2**31 - 1, -(2**31), 2**32 - 1, 2**62, 2**63 - 1, -(2**63))
FLOAT_EDGES = (0.0, -0.0, 1e-45, 1e38, 3.5e38, 1e308, float("inf"), float("-inf"), float("nan"))


def _png(width: int, height: int, idat: bytes, color_type: int = 0) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@functools.cache
def hostile_media() -> tuple[bytes, ...]:
    """Small files that claim big work, and broken real ones."""
    tall = _png(1, 50_000_000, zlib.compress(b""))  # 75-ish bytes, 50 M pixels (issue #12, finding 5)
    side = 7000
    page = _png(side, side, zlib.compress(b"\x00" * ((side + 1) * side), 9))  # ~50 KB, 49 M pixels
    jpeg_huge = (
        b"\xff\xd8\xff\xc0\x00\x11\x08\xff\xdc\xff\xdc\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01\xff\xd9"
    )
    gif_huge = b"GIF89a\xff\xff\xff\xff\x00\x00\x00,\x00\x00\x00\x00\xff\xff\xff\xff\x00\x02\x02D\x01\x00;"
    wav_hours = (
        b"RIFF\xff\xff\xff\x7fWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x44\xac\x00\x00\x88\x58\x01\x00"
        b"\x02\x00\x10\x00data\xff\xff\xff\x7f" + b"\x00\x01" * 64
    )
    wav_zero_rate = wav_hours.replace(b"\x44\xac\x00\x00", b"\x00\x00\x00\x00", 1)
    found: list[bytes] = [tall, page, jpeg_huge, gif_huge, wav_hours, wav_zero_rate, b"\x89PNG\r\n\x1a\n"]
    for name in ("images/chelsea.png", "images/page.png", "images/rocket.jpg", "audio/dog.mp3"):
        path = SAMPLES / name
        if path.exists():
            data = path.read_bytes()
            found += [data, data[: len(data) // 3]]  # whole, and cut short
    return tuple(found)


def _pick(options: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    """One of `options`, drawn by index (sampled_from would repr every large option)."""
    return st.integers(0, len(options) - 1).map(options.__getitem__)


def strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(KNOWN_NAMES),
        _pick(ODD_STRINGS),
        st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    )


def binaries() -> st.SearchStrategy[bytes]:
    return st.one_of(st.deferred(lambda: _pick(hostile_media())), st.binary(max_size=512))


def _integers(field: pb_descriptor.FieldDescriptor) -> st.SearchStrategy[int]:
    bits = 32 if field.type in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32, FD.TYPE_UINT32) else 64
    bits = 32 if field.type == FD.TYPE_FIXED32 else bits
    unsigned = field.type in (FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64)
    low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    edges = [v for v in INT_EDGES if low <= v <= high] + [low, high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _scalar(field: pb_descriptor.FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FD.TYPE_STRING:
        return strings()
    if kind == FD.TYPE_BYTES:
        return binaries()
    if kind == FD.TYPE_BOOL:
        return st.booleans()
    if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        if kind == FD.TYPE_FLOAT:
            return st.one_of(st.sampled_from(FLOAT_EDGES[:4] + FLOAT_EDGES[6:]), st.floats(width=32))
        return st.one_of(st.sampled_from(FLOAT_EDGES), st.floats())
    if kind == FD.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.sampled_from([-1, 99, 2**31 - 1]))
    return _integers(field)


def _is_map(field: pb_descriptor.FieldDescriptor) -> bool:
    return field.type == FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _repeated(field: pb_descriptor.FieldDescriptor) -> bool:
    # protobuf 5: label; later versions: is_repeated.
    return bool(getattr(field, "is_repeated", field.label == FD.LABEL_REPEATED))


@st.composite
def _fill(draw: st.DrawFn, descriptor: pb_descriptor.Descriptor, depth: int) -> Message:
    message = message_factory.GetMessageClass(descriptor)()
    fields = list(descriptor.fields)
    chosen = draw(st.lists(st.sampled_from(fields), max_size=len(fields), unique=True)) if fields else []
    for field in chosen:
        _set(draw, message, field, depth)
    return message


def _set(draw: st.DrawFn, message: Message, field: pb_descriptor.FieldDescriptor, depth: int) -> None:
    name = field.name
    if _is_map(field):
        key_field, value_field = (
            field.message_type.fields_by_name["key"],
            field.message_type.fields_by_name["value"],
        )
        target = getattr(message, name)
        for _ in range(draw(st.integers(0, draw(st.sampled_from([3, 3, 3, 80]))))):
            key = draw(_scalar(key_field))
            if value_field.type == FD.TYPE_MESSAGE:
                if depth < MAX_DEPTH:
                    target[key].CopyFrom(draw(_fill(value_field.message_type, depth + 1)))
            else:
                target[key] = draw(_scalar(value_field))
        return
    if field.type == FD.TYPE_MESSAGE:
        if depth >= MAX_DEPTH:
            return
        if _repeated(field):
            count = draw(st.integers(0, draw(st.sampled_from([3, 3, 3, 3, 40]))))
            for _ in range(count):
                getattr(message, name).add().CopyFrom(draw(_fill(field.message_type, depth + 1)))
        else:
            getattr(message, name).CopyFrom(draw(_fill(field.message_type, depth + 1)))
        return
    if _repeated(field):
        size = draw(st.sampled_from([0, 1, 3, 3, 600]))
        value = draw(_scalar(field))  # a long list repeats one value: large counts stay cheap to build
        getattr(message, name).extend(draw(st.lists(_scalar(field), max_size=min(size, 5))) + [value] * size)
        return
    setattr(message, name, draw(_scalar(field)))


def messages(descriptor: pb_descriptor.Descriptor) -> st.SearchStrategy[Message]:
    return _fill(descriptor, 0)


@st.composite
def mutated(draw: st.DrawFn, raw: bytes) -> bytes:
    """A valid encoding, broken: bytes flipped, cut, spliced or duplicated."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "cut" and data:
            data = data[: draw(st.integers(0, len(data)))]
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(max_size=16))
        else:
            data += data[: draw(st.integers(0, len(data)))]
    return bytes(data)
