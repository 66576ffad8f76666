"""(query, document) reranker over all-MiniLM-L6-v2 for the Triton Python backend.

No cross-encoder weights are available, so this reranks with late interaction
(ColBERT-style MaxSim) over the bi-encoder's contextual token states, mixed with
the pooled-embedding cosine the first stage ranked by:

    maxsim(q, d) = mean over query content tokens i of  max over document content tokens j of  <q_i, d_j>
    cosine(q, d) = <mean-pooled q, mean-pooled d>   (sentence-transformers pooling, L2-normalized)
    SCORE        = cosine_weight * cosine + (1 - cosine_weight) * maxsim

Token vectors are L2-normalized; [CLS]/[SEP]/[PAD] never take part in MaxSim, and
punctuation/symbol tokens are dropped too when `skip_punctuation` is true. Both
terms lie in [-1, 1]. An empty (whitespace-only) document scores -1, the minimum;
an empty query scores every document 0.

Triton's dynamic batcher hands `execute` a LIST of requests. All rows are scored
together: each distinct query is encoded once, each distinct document once (in
length-sorted sub-batches to limit padding), and the scores are split back per
request. bench/reranker_eval.py runs this same `Reranker` in-process.

Encode mode (stored token vectors, ColBERT-style): a request with only DOCUMENT
(or only QUERY) is not scored; it returns each text's MaxSim token vectors as
TOKENS [rows, T, 384] FP16 (zero-padded to the request's longest), TOKEN_COUNT
[rows, 1] and POOLED [rows, 384]: exactly what scoring uses, so the reranker
service can score a query against document vectors stored at index time with
the same formula (mmsearch/kit/token_vectors.py).
"""

from __future__ import annotations

import json
import os
import unicodedata
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))

DEFAULTS = {
    "max_query_tokens": "64",
    "max_doc_tokens": "256",
    "intra_op_threads": "0",
    "cosine_weight": "0.2",
    "skip_punctuation": "false",
    "encode_batch_size": "32",
}


def _is_punctuation(token: str) -> bool:
    text = token[2:] if token.startswith("##") else token
    return bool(text) and all(unicodedata.category(ch)[0] in "PS" for ch in text)


class Encoded:
    """One text's encoder output: the L2-normalized pooled vector, and the
    L2-normalized token vectors that take part in MaxSim with their token ids."""

    __slots__ = ("ids", "pooled", "tokens")

    def __init__(self, pooled: np.ndarray, tokens: np.ndarray, ids: np.ndarray) -> None:
        self.pooled = pooled
        self.tokens = tokens
        self.ids = ids


class Reranker:
    def __init__(self, version_dir: str, params: dict[str, str]) -> None:
        merged = {**DEFAULTS, **params}
        self.max_query_tokens = int(merged["max_query_tokens"])
        self.max_doc_tokens = int(merged["max_doc_tokens"])
        self.cosine_weight = float(merged["cosine_weight"])
        self.skip_punctuation = merged["skip_punctuation"].strip().lower() in ("1", "true", "yes")
        self.batch_size = max(1, int(merged["encode_batch_size"]))
        path = os.path.join(version_dir, "tokenizer.json")
        self.query_tokenizer = Tokenizer.from_file(path)
        self.query_tokenizer.enable_truncation(max_length=self.max_query_tokens)
        self.query_tokenizer.no_padding()
        self.doc_tokenizer = Tokenizer.from_file(path)
        self.doc_tokenizer.enable_truncation(max_length=self.max_doc_tokens)
        self.doc_tokenizer.no_padding()
        vocab = self.doc_tokenizer.get_vocab()
        self.special = np.zeros(max(vocab.values()) + 1, dtype=bool)
        for special in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"):
            if special in vocab:
                self.special[vocab[special]] = True
        self.punctuation = np.zeros_like(self.special)
        for token, index in vocab.items():
            if _is_punctuation(token):
                self.punctuation[index] = True
        self.excluded = self.special | self.punctuation if self.skip_punctuation else self.special
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(merged["intra_op_threads"])
        self.session = ort.InferenceSession(
            os.path.join(version_dir, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = {i.name for i in self.session.get_inputs()}

    # -- encoding -------------------------------------------------------------------------

    def encode(self, texts: list[str], *, query: bool) -> list[Encoded]:
        """Encode texts in length-sorted sub-batches; returns one Encoded per text, in order."""
        tokenizer = self.query_tokenizer if query else self.doc_tokenizer
        encodings = tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out: list[Encoded | None] = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self.session.run(None, feeds)[0].astype(np.float32)
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            norms = np.clip(np.linalg.norm(hidden, axis=2, keepdims=True), 1e-12, None)
            unit = hidden / norms
            for row, i in enumerate(chunk):
                n = len(encodings[i].ids)
                row_ids = ids[row, :n]
                keep = ~self.excluded[row_ids]
                if not keep.any():
                    # Only punctuation: fall back to every non-special token.
                    keep = ~self.special[row_ids]
                out[i] = Encoded(pooled[row], np.ascontiguousarray(unit[row, :n][keep]), row_ids[keep])
        return [e for e in out if e is not None]

    # -- scoring --------------------------------------------------------------------------

    @staticmethod
    def maxsim(query: Encoded, docs: list[Encoded]) -> np.ndarray:
        """Mean over query tokens of the best-matching document token, per document."""
        result = np.zeros(len(docs), dtype=np.float32)
        if len(query.tokens) == 0:
            return result
        for k, doc in enumerate(docs):
            if len(doc.tokens):
                result[k] = float((query.tokens @ doc.tokens.T).max(axis=1).mean())
        return result

    def components(self, queries: list[str], documents: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(cosine, maxsim) per (query, document) row; queries and documents are deduplicated."""
        unique_q = list(dict.fromkeys(queries))
        unique_d = list(dict.fromkeys(d for d in documents if d.strip()))
        q_enc = dict(zip(unique_q, self.encode(unique_q, query=True), strict=True)) if unique_q else {}
        d_enc = dict(zip(unique_d, self.encode(unique_d, query=False), strict=True)) if unique_d else {}
        cosine = np.zeros(len(queries), dtype=np.float32)
        late = np.zeros(len(queries), dtype=np.float32)
        rows_by_query: dict[str, list[int]] = {}
        for row, q in enumerate(queries):
            rows_by_query.setdefault(q, []).append(row)
        for q, rows in rows_by_query.items():
            scored = [r for r in rows if documents[r].strip()]
            if not scored:
                continue
            docs = [d_enc[documents[r]] for r in scored]
            cosine[scored] = np.stack([d.pooled for d in docs]) @ q_enc[q].pooled
            late[scored] = self.maxsim(q_enc[q], docs)
        return cosine, late

    def combine(self, cosine: np.ndarray, late: np.ndarray, weight: float | None = None) -> np.ndarray:
        w = self.cosine_weight if weight is None else weight
        return (w * cosine + (1.0 - w) * late).astype(np.float32)

    def score(self, queries: list[str], documents: list[str]) -> np.ndarray:
        cosine, late = self.components(queries, documents)
        scores = self.combine(cosine, late)
        empty_doc = np.asarray([not d.strip() for d in documents], dtype=bool)
        empty_query = np.asarray([not q.strip() for q in queries], dtype=bool)
        scores[empty_doc] = -1.0
        scores[empty_query & ~empty_doc] = 0.0
        return scores


def _strings(request: Any, name: str) -> list[str] | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    raw = tensor.as_numpy().reshape(-1)
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in raw]


def encoded_tensors(encoded: list[Encoded], dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TOKENS [n, T, dim] float16 (zero-padded), TOKEN_COUNT [n, 1] int32, POOLED [n, dim] float32.
    An empty text has no tokens and a zero pooled vector."""
    width = max([len(e.tokens) for e in encoded] + [1])
    tokens = np.zeros((len(encoded), width, dim), dtype=np.float16)
    counts = np.zeros((len(encoded), 1), dtype=np.int32)
    pooled = np.zeros((len(encoded), dim), dtype=np.float32)
    for row, e in enumerate(encoded):
        n = len(e.tokens)
        tokens[row, :n] = e.tokens
        counts[row, 0] = n
        pooled[row] = e.pooled
    return tokens, counts, pooled


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.reranker = Reranker(version_dir, params)
        self.dim: int | None = None

    def encode_texts(self, texts: list[str], *, query: bool) -> list[Encoded]:
        """Encode mode: one Encoded per text (an empty text: no tokens, zero pooled vector)."""
        dim = int(self.reranker.session.get_outputs()[0].shape[-1]) if self.dim is None else self.dim
        self.dim = dim
        present = [t for t in dict.fromkeys(texts) if t.strip()]
        done = dict(zip(present, self.reranker.encode(present, query=query), strict=True)) if present else {}
        empty = Encoded(np.zeros(dim, np.float32), np.zeros((0, dim), np.float32), np.zeros(0, np.int64))
        return [done.get(t, empty) for t in texts]

    def execute(self, requests: list[Any]) -> list[Any]:
        queries: list[str] = []
        documents: list[str] = []
        counts: list[int] = []
        errors: dict[int, str] = {}
        encodes: dict[int, Any] = {}
        for k, request in enumerate(requests):
            q = _strings(request, "QUERY")
            d = _strings(request, "DOCUMENT")
            if q is None or d is None:
                counts.append(0)
                if q is None and d is None:
                    errors[k] = "send QUERY and DOCUMENT (score), or one of them (encode)"
                    continue
                try:
                    texts = d if q is None else q
                    encoded = self.encode_texts(texts or [], query=q is not None)
                    tokens, token_count, pooled = encoded_tensors(encoded, self.dim or 0)
                except Exception as exc:  # reported on this request only
                    errors[k] = f"encode failed: {exc}"
                    continue
                encodes[k] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("TOKENS", tokens),
                        pb_utils.Tensor("TOKEN_COUNT", token_count),
                        pb_utils.Tensor("POOLED", pooled),
                    ]
                )
                continue
            if len(q) != len(d):
                errors[k] = f"QUERY has {len(q)} rows but DOCUMENT has {len(d)}"
                counts.append(0)
                continue
            queries.extend(q)
            documents.extend(d)
            counts.append(len(q))
        scores = self.reranker.score(queries, documents)
        responses = []
        start = 0
        for k, count in enumerate(counts):
            if k in encodes:
                responses.append(encodes[k])
                continue
            if k in errors:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(errors[k])))
                continue
            end = start + count
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("SCORE", scores[start:end].reshape(-1, 1))]
                )
            )
            start = end
        return responses

    def finalize(self) -> None:
        self.reranker = None  # type: ignore[assignment]
