"""all-MiniLM-L6-v2 text encoder for the Triton Python backend.

Tokenizes with the model's own tokenizer.json (HuggingFace `tokenizers`),
runs the transformer with ONNX Runtime, mean-pools the token states under the
attention mask and L2-normalizes, as sentence-transformers does for this model.

Triton's dynamic batcher hands `execute` a LIST of requests: their texts are
pooled, sorted by token length and cut into buckets of similar length, each
padded only to its own longest text and bounded by `bucket_tokens` (rows x
padded length), so a batch of short queries and long paragraphs does not pay
for 64 x 256 padded tokens; results are put back in request order.

Memory: ONNX Runtime's CPU arena keeps its peak allocation for the life of the
process (3 GB after a long ingest of padded 64 x 256 batches); `memory_arena`
"shrink" returns it after every run, "off" does not use the arena at all.
Memory patterns are off: they are cached per input shape, and bucketing makes
many shapes.

Late-interaction vectors in the same pass: when a request asks for MAXSIM_TOKENS
(the indexer does, for stored rerank vectors), each text also gets its
L2-normalized token states without [CLS]/[SEP]/[PAD]/[MASK]/[UNK] (FP16
[rows, T, 384], zero-padded to the request's longest; MAXSIM_COUNT says how many
are real): the document side of the MaxSim reranker computed from the states this
pass already has, instead of a second run of the same network. The parameter
`maxsim_tokens_for` names the reranker model/version whose encode mode these equal
(same ONNX file, tokenizer, token limit and exclusions; an integration test checks
it); empty means this model makes none.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))


def buckets(lengths: list[int], max_tokens: int, max_rows: int) -> list[list[int]]:
    """Indices grouped by similar length: sorted by length, a bucket closes when
    one more row would take rows x longest over `max_tokens` or rows over `max_rows`."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted ascending: the newest row is the bucket's longest.
        if current and ((len(current) + 1) * lengths[i] > max_tokens or len(current) >= max_rows):
            out.append(current)
            current = []
        current.append(i)
    if current:
        out.append(current)
    return out


def maxsim_tensors(rows: list[np.ndarray], dim: int) -> list[Any]:
    """MAXSIM_TOKENS [n, T, dim] FP16 zero-padded to the longest row, MAXSIM_COUNT [n, 1]."""
    width = max([len(r) for r in rows] + [1])
    padded = np.zeros((len(rows), width, dim), dtype=np.float16)
    counts = np.zeros((len(rows), 1), dtype=np.int32)
    for i, r in enumerate(rows):
        padded[i, : len(r)] = r
        counts[i, 0] = len(r)
    return [pb_utils.Tensor("MAXSIM_TOKENS", padded), pb_utils.Tensor("MAXSIM_COUNT", counts)]


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_tokens = int(params.get("max_tokens", "256"))
        self.bucket_tokens = max(self.max_tokens, int(params.get("bucket_tokens", "4096")))
        self.bucket_rows = int(params.get("bucket_rows", "64"))
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = Tokenizer.from_file(os.path.join(version_dir, "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_tokens)
        self.tokenizer.no_padding()  # padding is per bucket, below
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        # Idle ORT threads spin by default, taking CPU from the batcher, the stub
        # and other instances on the same cores; off unless configured.
        options.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        options.enable_mem_pattern = False
        arena = params.get("memory_arena", "shrink")
        options.enable_cpu_mem_arena = arena != "off"
        self.run_options = ort.RunOptions()
        if arena == "shrink":
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        onnx_file = params.get("onnx_file", "model.onnx")
        self.session = ort.InferenceSession(
            os.path.join(version_dir, onnx_file), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.maxsim_for = params.get("maxsim_tokens_for", "").strip()
        vocab = self.tokenizer.get_vocab()
        self.special = np.zeros(max(vocab.values()) + 1, dtype=bool)
        for token in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"):
            if token in vocab:
                self.special[vocab[token]] = True

    def _run(self, ids: list[list[int]], with_tokens: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        """Mean-pooled, L2-normalized vectors of one bucket, padded to its longest row, and
        (if `with_tokens`) each row's unit token vectors without special tokens."""
        width = max(len(row) for row in ids)
        batch = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for r, row in enumerate(ids):
            batch[r, : len(row)] = row
            mask[r, : len(row)] = 1
        feeds = {"input_ids": batch, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(batch)
        hidden = self.session.run(None, feeds, self.run_options)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        tokens: list[np.ndarray] = []
        if with_tokens:
            unit = hidden / np.clip(np.linalg.norm(hidden, axis=2, keepdims=True), 1e-12, None)
            for r, row in enumerate(ids):
                keep = ~self.special[np.asarray(row, dtype=np.int64)]
                tokens.append(unit[r, : len(row)][keep].astype(np.float16))
        return vectors, tokens

    def _encode(
        self, texts: list[str], with_tokens: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        encodings = self.tokenizer.encode_batch(texts)
        ids = [e.ids for e in encodings]
        lengths = [len(row) for row in ids]
        vectors: np.ndarray | None = None
        maxsim: list[np.ndarray] = [np.zeros((0, 0), np.float16)] * len(texts)
        for bucket in buckets(lengths, self.bucket_tokens, self.bucket_rows):
            out, token_rows = self._run([ids[i] for i in bucket], with_tokens)
            if vectors is None:
                vectors = np.empty((len(texts), out.shape[1]), dtype=np.float32)
            vectors[bucket] = out  # back to request order
            for i, rows in zip(bucket, token_rows if with_tokens else [], strict=with_tokens):
                maxsim[i] = rows
        assert vectors is not None
        tokens = np.asarray(lengths, dtype=np.int32)
        truncated = np.asarray([len(e.overflowing) > 0 for e in encodings], dtype=bool)
        return vectors, tokens, truncated, maxsim

    def execute(self, requests: list[Any]) -> list[Any]:
        texts: list[str] = []
        counts: list[int] = []
        wants: list[bool] = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            decoded = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in raw]
            texts.extend(decoded)
            counts.append(len(decoded))
            wants.append("MAXSIM_TOKENS" in request.requested_output_names())
        vectors, tokens, truncated, maxsim = self._encode(texts, any(wants))
        responses = []
        start = 0
        for count, want in zip(counts, wants, strict=True):
            end = start + count
            outputs = [
                pb_utils.Tensor("EMBEDDING", vectors[start:end]),
                pb_utils.Tensor("TOKENS", tokens[start:end].reshape(-1, 1)),
                pb_utils.Tensor("TRUNCATED", truncated[start:end].reshape(-1, 1)),
            ]
            if want:
                outputs += maxsim_tensors(maxsim[start:end], vectors.shape[1])
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            start = end
        return responses

    def finalize(self) -> None:
        self.session = None
