"""Signed content events: which producer sent an event, and may it touch that tenant.

A producer holds a key id and a secret. It sends each event with two headers:
`mmsearch-producer: <key id>` and `mmsearch-signature: <hex HMAC-SHA256 of the
record value with the secret>`. The indexer knows each producer's secret and
the tenants it may write to (MMSEARCH_PRODUCER_KEYS_FILE) and dead-letters
anything unsigned, signed badly, or for another tenant (REASON_UNAUTHORIZED).
Any language can sign: `openssl dgst -sha256 -hmac "$SECRET"` over the value.
See docs/security.md for the threat model.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PRODUCER_HEADER = "mmsearch-producer"
SIGNATURE_HEADER = "mmsearch-signature"
DEV_PRODUCERS_FILE = Path(__file__).with_name("dev_producers.json")
# Documented in README.md; accepted only while the indexer uses the development file.
DEV_PRODUCER = "dev"
DEV_PRODUCER_SECRET = "mmsearch-dev-producer-secret"
ANY_TENANT = "*"


def sign(secret: str, value: bytes) -> str:
    return hmac.new(secret.encode(), value, hashlib.sha256).hexdigest()


def signed_headers(producer: str, secret: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(PRODUCER_HEADER, producer.encode()), (SIGNATURE_HEADER, sign(secret, value).encode())]


class _Producer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128)
    secret: str = Field(min_length=16)
    tenants: list[str] = Field(min_length=1)


class _ProducersFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    producers: list[_Producer]


class ProducersFileError(ValueError):
    pass


@dataclass(frozen=True)
class ProducerKeys:
    secrets: Mapping[str, str]
    tenants: Mapping[str, frozenset[str]]

    @classmethod
    def from_file(cls, path: Path) -> ProducerKeys:
        try:
            parsed = _ProducersFile.model_validate(json.loads(path.read_text()))
        except (OSError, ValueError, ValidationError) as exc:
            raise ProducersFileError(f"producer keys file {path}: {exc}") from exc
        return cls(
            {p.id: p.secret for p in parsed.producers},
            {p.id: frozenset(p.tenants) for p in parsed.producers},
        )

    def refusal(self, headers: Sequence[tuple[str, bytes]], value: bytes, tenant: str) -> str | None:
        """Why this record may not change `tenant`'s items; None when it may."""
        found = {k.lower(): v for k, v in headers}
        producer = found.get(PRODUCER_HEADER, b"").decode("utf-8", "replace")
        signature = found.get(SIGNATURE_HEADER, b"").decode("ascii", "replace").strip().lower()
        if not producer or not signature:
            return f"unsigned: the {PRODUCER_HEADER} and {SIGNATURE_HEADER} headers are required"
        secret = self.secrets.get(producer)
        if secret is None:
            return f"unknown producer {producer[:128]!r}"
        if not hmac.compare_digest(signature, sign(secret, value)):
            return f"bad signature for producer {producer!r}"
        allowed = self.tenants[producer]
        if ANY_TENANT not in allowed and tenant not in allowed:
            return f"producer {producer!r} may not write to tenant {tenant!r}"
        return None
