"""Stored late-interaction vectors: one text's MaxSim token vectors and pooled vector, as the
reranker model's encode mode makes them (model_repository/minilm_maxsim_rerank), packed into
one opaque blob that the indexer stores with each passage and the searcher hands back in
`RerankCandidate.token_vectors`. Only the reranker reads it.

Layout (little-endian):

    magic  b"MMT1"
    u8     encoding       1 = int8 (symmetric, one float16 scale per token), 2 = float16
    u8     reserved
    u16    dim
    u32    token count n
    u16    model tag length, then the tag (utf-8): "<model>/<version>" that made the vectors
    dim x float16          the pooled vector (the cosine term)
    int8:    n x float16 scales, then n x dim int8     (value = int8 * scale)
    float16: n x dim float16

Bytes per passage of n tokens at 384 dims: int8 n * 386 + 768 + header; float16 n * 768 + 768.
Token vectors are unit vectors: int8 with a per-token scale keeps each coordinate within
scale / 2 (about 0.4 % of the largest coordinate), which moves a MaxSim score by ~1e-3.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

MAGIC = b"MMT1"
Encoding = Literal["int8", "float16"]
_CODES: dict[Encoding, int] = {"int8": 1, "float16": 2}
_NAMES: dict[int, Encoding] = {v: k for k, v in _CODES.items()}
_HEADER = struct.Struct("<4sBBHIH")


class BadTokens(ValueError):
    """A blob that is not a token-vector blob of this format."""


@dataclass(frozen=True)
class TokenVectors:
    model: str  # "<model>/<version>" that made them
    tokens: npt.NDArray[np.float32]  # [n, dim], unit rows
    pooled: npt.NDArray[np.float32]  # [dim]


def pack(vectors: TokenVectors, encoding: Encoding) -> bytes:
    tokens = np.asarray(vectors.tokens, dtype=np.float32)
    pooled = np.asarray(vectors.pooled, dtype=np.float32).reshape(-1)
    n, dim = tokens.shape if tokens.size else (0, pooled.shape[0])
    if dim != pooled.shape[0]:
        raise ValueError(f"tokens have {dim} dims, pooled {pooled.shape[0]}")
    tag = vectors.model.encode("utf-8")
    parts = [_HEADER.pack(MAGIC, _CODES[encoding], 0, dim, n, len(tag)), tag, pooled.astype("<f2").tobytes()]
    if encoding == "int8":
        peak = np.abs(tokens).max(axis=1) if n else np.zeros(0, np.float32)
        scales = (np.maximum(peak, 1e-12) / 127.0).astype("<f2")
        # Quantize with the float16 scale actually stored, so decode(encode(x)) is as close as it gets.
        exact = np.maximum(scales.astype(np.float32), np.float32(1e-12))
        quantized = np.clip(np.rint(tokens / exact[:, None]), -127, 127).astype(np.int8)
        parts += [scales.tobytes(), quantized.tobytes()]
    else:
        parts.append(tokens.astype("<f2").tobytes())
    return b"".join(parts)


def unpack(blob: bytes) -> TokenVectors:
    if len(blob) < _HEADER.size:
        raise BadTokens("too short")
    magic, code, _, dim, n, tag_len = _HEADER.unpack_from(blob)
    if magic != MAGIC or code not in _NAMES:
        raise BadTokens("not a token-vector blob")
    offset = _HEADER.size
    model = blob[offset : offset + tag_len].decode("utf-8", "replace")
    offset += tag_len
    expected = offset + 2 * dim + (n * 2 + n * dim if code == 1 else 2 * n * dim)
    if len(blob) != expected:
        raise BadTokens(f"{len(blob)} bytes, expected {expected}")
    pooled = np.frombuffer(blob, "<f2", dim, offset).astype(np.float32)
    offset += 2 * dim
    if _NAMES[code] == "int8":
        scales = np.frombuffer(blob, "<f2", n, offset).astype(np.float32)
        offset += 2 * n
        values = np.frombuffer(blob, np.int8, n * dim, offset).reshape(n, dim).astype(np.float32)
        tokens = values * scales[:, None]
    else:
        tokens = np.frombuffer(blob, "<f2", n * dim, offset).reshape(n, dim).astype(np.float32)
    return TokenVectors(model, tokens, pooled)


def model_of(blob: bytes) -> str | None:
    """The model tag of a blob without decoding its vectors (None: not a blob of this format)."""
    if len(blob) < _HEADER.size:
        return None
    magic, code, _, _, _, tag_len = _HEADER.unpack_from(blob)
    if magic != MAGIC or code not in _NAMES:
        return None
    return blob[_HEADER.size : _HEADER.size + tag_len].decode("utf-8", "replace")


def maxsim(query: npt.NDArray[np.float32], document: npt.NDArray[np.float32]) -> float:
    """Mean over query tokens of the best-matching document token (0 without tokens): the
    same formula as the model's `Reranker.maxsim`."""
    if len(query) == 0 or len(document) == 0:
        return 0.0
    return float((query @ document.T).max(axis=1).mean())


def late_interaction_scores(
    query: TokenVectors, documents: list[TokenVectors], cosine_weight: float
) -> npt.NDArray[np.float32]:
    """cosine_weight * <pooled q, pooled d> + (1 - cosine_weight) * maxsim(q, d), per document."""
    out = np.zeros(len(documents), dtype=np.float32)
    for k, doc in enumerate(documents):
        cosine = float(query.pooled @ doc.pooled)
        out[k] = cosine_weight * cosine + (1.0 - cosine_weight) * maxsim(query.tokens, doc.tokens)
    return out
