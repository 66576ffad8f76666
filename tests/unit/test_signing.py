"""Producer authorization: an event changes a tenant's items only when signed by
a known producer allowed that tenant; anything else says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmsearch.kit.signing import ProducerKeys, ProducersFileError, sign, signed_headers

SECRET = "feed-a-secret-0123456789"


def keys(tmp_path: Path) -> ProducerKeys:
    path = tmp_path / "producers.json"
    producers = [{"id": "feed-a", "secret": SECRET, "tenants": ["acme"]}]
    path.write_text(json.dumps({"producers": producers}))
    return ProducerKeys.from_file(path)


def test_only_a_valid_signature_for_an_allowed_tenant_passes(tmp_path: Path) -> None:
    producers = keys(tmp_path)
    value = b"an event"
    good = signed_headers("feed-a", SECRET, value)
    assert producers.refusal(good, value, "acme") is None
    assert "may not write to tenant 'globex'" in (producers.refusal(good, value, "globex") or "")
    assert "bad signature" in (producers.refusal(good, b"an altered event", "acme") or "")
    assert "unsigned" in (producers.refusal([("content-type", b"x")], value, "acme") or "")
    forged = signed_headers("feed-b", SECRET, value)
    assert "unknown producer" in (producers.refusal(forged, value, "acme") or "")
    wrong_key = [
        ("mmsearch-producer", b"feed-a"),
        ("mmsearch-signature", sign("guessed-secret-xxxxxx", value).encode()),
    ]
    assert "bad signature" in (producers.refusal(wrong_key, value, "acme") or "")


def test_a_bad_keys_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "producers.json"
    path.write_text(json.dumps({"producers": [{"id": "x", "secret": "short", "tenants": ["a"]}]}))
    with pytest.raises(ProducersFileError, match="producer keys file"):
        ProducerKeys.from_file(path)
