"""Requests gRPC cannot even parse get a status that means something: without a
token UNAUTHENTICATED, with one INVALID_ARGUMENT (before, both were gRPC's bare
UNKNOWN): garbage bytes, and a filter nested past protobuf's recursion limit."""

from __future__ import annotations

import grpc
import pytest

from mmsearch.v1 import common_pb2, searcher_pb2
from tests.conftest import DEV_TOKEN, make_settings, start_service

pytestmark = pytest.mark.integration
SEARCH = "/mmsearch.v1.Searcher/Search"


def nested_filter(depth: int) -> bytes:
    """A Filter nested `depth` levels (built as bytes: the Python library refuses to build it)."""
    condition = common_pb2.FieldCondition(field="tags", eq=common_pb2.Value(string_value="x"))
    blob = common_pb2.Filter(condition=condition).SerializeToString()
    negate_tag = common_pb2.Filter.DESCRIPTOR.fields_by_name["negate"].number
    for _ in range(depth):
        blob = _field(negate_tag, blob)
    request = searcher_pb2.SearchRequest(query=common_pb2.Content(text="q")).SerializeToString()
    filter_tag = searcher_pb2.SearchRequest.DESCRIPTOR.fields_by_name["filter"].number
    return request + _field(filter_tag, blob)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@pytest.mark.parametrize(
    "payload", [b"\xff\xff\xff garbage", nested_filter(150)], ids=["garbage", "deep-filter"]
)
async def test_unparseable_requests_get_a_status_that_means_something(payload: bytes) -> None:
    handle = await start_service(make_settings(), "searcher")
    try:
        async with grpc.aio.insecure_channel(handle.addr) as channel:
            call = channel.unary_unary(SEARCH)
            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                await call(payload, timeout=10)
            assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await call(payload, metadata=(("authorization", f"Bearer {DEV_TOKEN}"),), timeout=10)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad.value.details()
    finally:
        await handle.running.stop()
