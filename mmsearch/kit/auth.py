"""Bearer-token authentication: the caller's tenant and roles come from identity.

The token file maps sha256(token) to a principal, so the file holds no usable
secret. Handlers read the caller with `current_principal()`; no RPC takes the
tenant from a request field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmsearch.kit.errors import PermissionDenied, Unauthenticated

ROLE_EMBED = "embed"
ROLE_SEARCH = "search"
ROLE_RERANK = "rerank"
ROLE_INDEX_ADMIN = "index-admin"
ROLES = frozenset({ROLE_EMBED, ROLE_SEARCH, ROLE_RERANK, ROLE_INDEX_ADMIN})


@dataclass(frozen=True)
class Principal:
    name: str
    tenant: str
    roles: frozenset[str]

    def require(self, role: str) -> None:
        if role not in self.roles:
            raise PermissionDenied(f"caller {self.name!r} lacks role {role!r}")


class _TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tenant: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    roles: list[str]


class _TokenFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tokens: list[_TokenEntry]


class TokenAuthenticator:
    def __init__(self, principals_by_hash: dict[str, Principal]) -> None:
        self._by_hash = dict(principals_by_hash)

    @classmethod
    def from_file(cls, path: Path) -> TokenAuthenticator:
        try:
            parsed = _TokenFile.model_validate(json.loads(path.read_text()))
        except (OSError, ValueError, ValidationError) as exc:
            raise ValueError(f"token file {path}: {exc}") from exc
        by_hash: dict[str, Principal] = {}
        for entry in parsed.tokens:
            unknown = set(entry.roles) - ROLES
            if unknown:
                raise ValueError(f"token file {path}: {entry.name}: unknown roles {sorted(unknown)}")
            if entry.sha256 in by_hash:
                raise ValueError(f"token file {path}: {entry.name}: duplicate token hash")
            by_hash[entry.sha256] = Principal(entry.name, entry.tenant, frozenset(entry.roles))
        return cls(by_hash)

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
        header = None
        for key, value in metadata or ():
            if key.lower() == "authorization":
                header = value.decode("latin-1") if isinstance(value, bytes) else value
                break
        if header is None:
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
        principal = self._by_hash.get(hashlib.sha256(token.encode("utf-8")).hexdigest())
        if principal is None:
            raise Unauthenticated("invalid token")
        return principal


_current_principal: ContextVar[Principal | None] = ContextVar("mmsearch_principal", default=None)


def current_principal() -> Principal:
    """The authenticated caller of the RPC being handled."""
    principal = _current_principal.get()
    if principal is None:
        raise Unauthenticated("no authenticated caller")
    return principal


def bind_principal(principal: Principal | None) -> object:
    """Set the caller for the current context; returns a token for `unbind_principal`."""
    return _current_principal.set(principal)


def unbind_principal(token: object) -> None:
    _current_principal.reset(token)  # type: ignore[arg-type]
