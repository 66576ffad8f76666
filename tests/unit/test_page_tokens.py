"""Page tokens are signed: a forged, altered, truncated or foreign token, or an
offset past the last page (2^64 included), is INVALID_ARGUMENT, never INTERNAL;
so are out-of-range timestamps and NaN in filters."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmsearch.kit.errors import FailedPrecondition, InvalidArgument
from mmsearch.searcher.cursor import Cursor, PageTokens

TOKENS = PageTokens(b"k" * 32, max_offset=10_000)


def unsigned(payload: dict[str, object]) -> str:
    """What a forger writes: the old token format, or a plausible body with no valid MAC."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def test_a_token_round_trips_for_its_own_request() -> None:
    token = TOKENS.encode(Cursor(20, "minilm@1", "abc"))
    assert TOKENS.offset(token, "minilm@1", "abc") == 20
    with pytest.raises(FailedPrecondition):
        TOKENS.offset(token, "minilm@2", "abc")
    with pytest.raises(InvalidArgument, match="different query"):
        TOKENS.offset(token, "minilm@1", "other")


@pytest.mark.parametrize(
    "token",
    [
        unsigned({"o": 2**64, "s": "minilm@1", "f": "abc"}),
        unsigned({"o": 20, "s": "minilm@1", "f": "abc"}) + ".AAAAAAAAAAAAAAAAAAAAAA",
        PageTokens(b"another key", 10_000).encode(Cursor(20, "minilm@1", "abc")),
        TOKENS.encode(Cursor(20, "minilm@1", "abc"))[:-3],
        "a" * 5000,
        "..",
        "%%%.%%%",
    ],
)
def test_forged_or_altered_tokens_are_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        TOKENS.offset(token, "minilm@1", "abc")


def test_an_offset_past_the_last_page_is_invalid_argument_even_when_signed() -> None:
    deep = PageTokens(b"k" * 32, max_offset=2**70).encode(Cursor(2**64, "minilm@1", "abc"))
    with pytest.raises(InvalidArgument, match="past the last page"):
        TOKENS.offset(deep, "minilm@1", "abc")


@given(st.text(max_size=300))
def test_any_string_is_a_token_or_invalid_argument(token: str) -> None:
    with contextlib.suppress(InvalidArgument, FailedPrecondition):  # anything else fails the test
        TOKENS.offset(token, "minilm@1", "abc")


def test_filter_values_out_of_range_are_invalid_argument_naming_the_path() -> None:
    from mmsearch.stores.errors import InvalidQuery
    from mmsearch.stores.filters import parse_filter
    from mmsearch.v1 import common_pb2

    far = common_pb2.Value()
    far.timestamp_value.seconds = 2**62
    condition = common_pb2.FieldCondition(field="created_at", range=common_pb2.Range(gte=far))
    with pytest.raises(InvalidQuery, match="out of range") as raised:
        parse_filter(common_pb2.Filter(condition=condition), {})
    assert raised.value.field and raised.value.field.startswith("filter")
    nan = common_pb2.Filter(
        condition=common_pb2.FieldCondition(
            field="attributes.score", eq=common_pb2.Value(double_value=float("nan"))
        )
    )
    with pytest.raises(InvalidQuery, match="finite"):
        parse_filter(nan, {"score": "float"})


@pytest.mark.parametrize("junk", ["\x00\x00\x00\x00\x00", "!", " ", "==", "+/", "\n"])
def test_a_token_has_one_spelling(junk: str) -> None:
    """Before, base64's lenient decoder skipped characters outside its alphabet, so a genuine
    token with junk inserted decoded to the same signed cursor (found by the atheris target
    tests/fuzz/atheris_targets.py page_token)."""
    token = TOKENS.encode(Cursor(20, "minilm@1", "0123456789abcdef"))
    body, mac = token.split(".")
    for spelled in (f"{body[:10]}{junk}{body[10:]}.{mac}", f"{body}.{mac[:5]}{junk}{mac[5:]}"):
        with pytest.raises(InvalidArgument):
            TOKENS.decode(spelled)
    assert TOKENS.decode(token).offset == 20
