"""Page tokens: opaque, signed cursors.

A token holds (offset, space, a fingerprint of the request) and an HMAC-SHA256
over them with the searcher's key (MMSEARCH_SEARCH_PAGE_TOKEN_KEY; every
searcher replica behind one address needs the same key). A token that was not
issued by a searcher with this key, was altered, or carries an offset past the
deepest page the server serves is INVALID_ARGUMENT, never INTERNAL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

from mmsearch.kit.errors import FailedPrecondition, InvalidArgument
from mmsearch.v1 import searcher_pb2

MAC_BYTES = 16
MAX_TOKEN_CHARS = 1024
NOT_OURS = "page_token is not a token this server issued"


@dataclass(frozen=True)
class Cursor:
    offset: int
    space: str
    fingerprint: str


def fingerprint(request: searcher_pb2.SearchRequest) -> str:
    """What must stay the same between pages (everything but the cursor)."""
    stable = searcher_pb2.SearchRequest()
    stable.CopyFrom(request)
    stable.page_token = ""
    return hashlib.sha256(stable.SerializeToString(deterministic=True)).hexdigest()[:16]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    """Strict: only the URL-safe alphabet, in the one form _b64 writes. (base64's decoders
    skip characters outside the alphabet, so a token with junk inserted used to decode to the
    same signed cursor: many spellings of one token, found by tests/fuzz/atheris_targets.py.)"""
    raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64(raw) != text:
        raise ValueError("not the canonical encoding")
    return raw


class PageTokens:
    def __init__(self, key: bytes, max_offset: int) -> None:
        self._key = key
        self._max_offset = max_offset

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:MAC_BYTES]

    def encode(self, cursor: Cursor) -> str:
        payload = json.dumps({"o": cursor.offset, "s": cursor.space, "f": cursor.fingerprint}).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, token: str) -> Cursor:
        invalid = InvalidArgument(NOT_OURS, field="page_token")
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise invalid
        body, mac = token.split(".")
        try:
            payload, tag = _unb64(body), _unb64(mac)
        except ValueError as exc:
            raise invalid from exc
        if not hmac.compare_digest(tag, self._mac(payload)):
            raise invalid
        try:
            data = json.loads(payload)
            cursor = Cursor(int(data["o"]), str(data["s"]), str(data["f"]))
        except (ValueError, KeyError, TypeError) as exc:  # signed by us, so only a key clash
            raise invalid from exc
        if not 0 <= cursor.offset <= self._max_offset:
            raise InvalidArgument(
                f"page_token offset is past the last page ({self._max_offset})", field="page_token"
            )
        return cursor

    def offset(self, token: str, space_id: str, print_: str) -> int:
        """Where a page starts: 0, or the offset of a cursor issued for this very request."""
        if not token:
            return 0
        cursor = self.decode(token)
        if cursor.space != space_id:
            raise FailedPrecondition(
                f"page_token belongs to space {cursor.space}, the request resolves to {space_id}"
            )
        if cursor.fingerprint != print_:
            raise InvalidArgument(
                "page_token belongs to a different query, filter or options", field="page_token"
            )
        return cursor.offset
