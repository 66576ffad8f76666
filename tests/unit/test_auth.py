import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmsearch.kit.auth import TokenAuthenticator
from mmsearch.kit.config import DEV_TOKENS_FILE
from mmsearch.kit.errors import PermissionDenied, Unauthenticated


@pytest.fixture(scope="module")
def dev_auth() -> TokenAuthenticator:
    return TokenAuthenticator.from_file(DEV_TOKENS_FILE)


def test_documented_dev_tokens_map_to_tenants_and_roles(dev_auth: TokenAuthenticator) -> None:
    dev = dev_auth.authenticate([("authorization", "Bearer mmsearch-dev-token")])
    assert dev.tenant == "dev"
    assert dev.roles == {"embed", "search", "rerank", "index-admin"}
    other = dev_auth.authenticate([("authorization", "bearer  mmsearch-dev-token-tenant-b ")])
    assert other.tenant == "tenant-b"
    readonly = dev_auth.authenticate([("authorization", "Bearer mmsearch-dev-token-readonly")])
    assert readonly.roles == {"search"}
    with pytest.raises(PermissionDenied, match="embed"):
        readonly.require("embed")


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("x-other", "1")],
        [("authorization", "mmsearch-dev-token")],
        [("authorization", "Basic mmsearch-dev-token")],
        [("authorization", "Bearer ")],
        [("authorization", "Bearer wrong-token")],
    ],
)
def test_missing_or_bad_credentials_are_unauthenticated(
    dev_auth: TokenAuthenticator, metadata: list[tuple[str, str]]
) -> None:
    with pytest.raises(Unauthenticated):
        dev_auth.authenticate(metadata)


@given(st.text(max_size=200))
def test_any_header_value_is_either_valid_or_unauthenticated(value: str) -> None:
    auth = TokenAuthenticator.from_file(DEV_TOKENS_FILE)
    try:
        principal = auth.authenticate([("authorization", value)])
    except Unauthenticated:
        return
    assert principal.tenant in {"dev", "tenant-b"}


def _write(tmp_path: Path, tokens: list[dict[str, object]]) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": tokens}))
    return path


def test_token_file_is_validated(tmp_path: Path) -> None:
    good = {
        "name": "a",
        "sha256": hashlib.sha256(b"s3cret").hexdigest(),
        "tenant": "acme",
        "roles": ["search"],
    }
    auth = TokenAuthenticator.from_file(_write(tmp_path, [good]))
    assert auth.authenticate([("authorization", "Bearer s3cret")]).tenant == "acme"
    with pytest.raises(ValueError, match="unknown roles"):
        TokenAuthenticator.from_file(_write(tmp_path, [{**good, "roles": ["root"]}]))
    with pytest.raises(ValueError, match="duplicate"):
        TokenAuthenticator.from_file(_write(tmp_path, [good, {**good, "name": "b"}]))
    with pytest.raises(ValueError, match="sha256"):
        TokenAuthenticator.from_file(_write(tmp_path, [{**good, "sha256": "s3cret"}]))
    with pytest.raises(ValueError, match=r"missing\.json"):
        TokenAuthenticator.from_file(tmp_path / "missing.json")
