"""Coverage-guided fuzz targets (atheris / libFuzzer) for the decoders and parsers.

    python -m tests.fuzz.atheris_targets TARGET [libFuzzer flags] [CORPUS_DIR]

TARGET is one of TARGETS. Each takes the fuzzer's bytes and checks the same
documented outcome as the hypothesis properties: an event or a dead-letter
reason; a filter/query accepted or refused with InvalidQuery naming its path; a
page token decoded only when this key issued it, else INVALID_ARGUMENT on
`page_token`; a batch of records through the plan stage, each placed or
dead-lettered within the DLQ's smallest record size.
Any other exception is a finding: libFuzzer stops and saves the input.
`scripts/fuzz.py` runs every target for a time budget (`make fuzz`)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports(include=["mmsearch"]):
    from mmsearch.clients.spaces import SpaceInfo
    from mmsearch.indexer.batch import Record, fit
    from mmsearch.indexer.events import IndexEvent, Rejection, decode
    from mmsearch.indexer.plan import Planner
    from mmsearch.kit.errors import InvalidArgument
    from mmsearch.searcher.cursor import Cursor, PageTokens
    from mmsearch.stores.base import Collection, FieldKind, Query
    from mmsearch.stores.errors import InvalidQuery
    from mmsearch.stores.query import validate_query

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from mmsearch.producer import delete_event, text_event
from mmsearch.v1 import common_pb2

ATTRIBUTES: dict[str, FieldKind] = {"score": "float", "count": "int", "flag": "bool", "label": "keyword",
                                    "labels": "keyword_list", "when": "datetime"}  # fmt: skip
COLLECTION = Collection("fuzz_1", "minilm@1", 8, attributes=ATTRIBUTES)
CONTENT_TYPES = ("", "application/x-protobuf", "application/json", "text/plain")
KEY = b"fuzz-page-token-key-0123456789"
TOKENS = PageTokens(KEY, 10_000)
SPACE = SpaceInfo("minilm@1", 384, frozenset({"text", "image", "audio"}))


def event_target(data: bytes) -> None:
    """First byte: the content-type header; the rest: the record value."""
    if not data:
        return
    content_type = CONTENT_TYPES[data[0] % len(CONTENT_TYPES)]
    headers = [("content-type", content_type.encode())] if content_type else []
    result = decode(data[1:], headers)
    if isinstance(result, Rejection):
        assert result.reason and result.detail
    else:
        assert isinstance(result, IndexEvent) and result.event.tenant and result.event.item_id


def filter_target(data: bytes) -> None:
    """The bytes as a Filter, run through the query validation every store uses."""
    tree = common_pb2.Filter()
    try:
        tree.ParseFromString(data)
    except (DecodeError, RecursionError):
        return  # the interceptor answers INVALID_ARGUMENT before any handler (tested elsewhere)
    query = Query(tenant="acme", limit=10, vector=None, text="harbour", filter=tree)
    try:
        validate_query(query, COLLECTION)
    except InvalidQuery as refused:
        assert refused.field and refused.field.startswith("filter"), refused.field


def token_target(data: bytes) -> None:
    """The bytes as a page token (any text a client can put in the string field)."""
    token = data.decode("utf-8", "replace")
    try:
        cursor = TOKENS.decode(token)
    except InvalidArgument as refused:
        assert refused.field == "page_token"
        return
    assert isinstance(cursor, Cursor) and TOKENS.encode(cursor) == token


class _Spaces:
    async def resolve(self, name: str) -> SpaceInfo | None:
        return SPACE if name in ("default", "minilm@1", "audio") else None


PLANNER = Planner(_Spaces())
LOOP = asyncio.new_event_loop()
DLQ_MIN_BYTES = 16_384  # the smallest MMSEARCH_DLQ_MAX_RECORD_BYTES allowed


def plan_target(data: bytes) -> None:
    """The bytes as a batch of records (split at 0xFE 0xFE; each one's first byte picks its
    content-type) through the plan stage: every record is planned, a duplicate, or
    dead-lettered, and every dead letter fits the smallest DLQ record size."""
    records = []
    for i, part in enumerate(data.split(b"\xfe\xfe")[:16]):
        content_type = CONTENT_TYPES[part[0] % len(CONTENT_TYPES)] if part else ""
        headers = (("content-type", content_type.encode()),) if content_type else ()
        records.append(Record("content.v1", 0, i, part[:8], part[1:], headers))
    plan = LOOP.run_until_complete(PLANNER.plan(records))
    placed = sum(len(group) for group in plan.groups.values())
    assert placed + len(plan.dead_letters) + plan.duplicates >= len(records)
    for letter in plan.dead_letters:
        assert fit(letter, DLQ_MIN_BYTES).ByteSize() <= DLQ_MIN_BYTES


TARGETS: dict[str, Callable[[bytes], None]] = {
    "event": event_target,
    "filter": filter_target,
    "page_token": token_target,
    "plan": plan_target,
}


def seeds() -> dict[str, list[bytes]]:
    """Valid inputs each target starts from (libFuzzer mutates them)."""
    event = text_event("acme", "a", "a note on the harbour", tags=["x"])
    event.metadata.attributes["score"].double_value = 0.5
    condition = common_pb2.FieldCondition(field="tags", eq=common_pb2.Value(string_value="x"))
    ranged = common_pb2.FieldCondition(
        field="attributes.when", range=common_pb2.Range(gte=common_pb2.Value(timestamp_value={"seconds": 0}))
    )
    tree = common_pb2.Filter(
        all_of=common_pb2.FilterList(
            filters=[
                common_pb2.Filter(condition=condition),
                common_pb2.Filter(negate=common_pb2.Filter(condition=ranged)),
            ]
        )
    )
    return {
        "event": [b"\x01" + event.SerializeToString(), b"\x02" + json_format.MessageToJson(event).encode()],
        "filter": [tree.SerializeToString()],
        "page_token": [TOKENS.encode(Cursor(20, "minilm@1", "0123456789abcdef")).encode()],
        "plan": [
            b"\x01" + event.SerializeToString() + b"\xfe\xfe\x02" + json_format.MessageToJson(event).encode(),
            b"\x01" + delete_event("acme", "a", version=2).SerializeToString(),
        ],
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "seed":  # seed TARGET DIR: write its starting corpus
        from pathlib import Path

        folder = Path(sys.argv[3])
        folder.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds()[sys.argv[2]]):
            (folder / f"seed-{i}").write_bytes(seed)
        return
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.atheris_targets {{{','.join(TARGETS)}}} [libFuzzer flags]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
