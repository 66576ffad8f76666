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

    def _run(self, ids: list[list[int]]) -> np.ndarray:
        """Mean-pooled, L2-normalized vectors of one bucket, padded to its longest row."""
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
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        ids = [e.ids for e in encodings]
        lengths = [len(row) for row in ids]
        vectors: np.ndarray | None = None
        for bucket in buckets(lengths, self.bucket_tokens, self.bucket_rows):
            out = self._run([ids[i] for i in bucket])
            if vectors is None:
                vectors = np.empty((len(texts), out.shape[1]), dtype=np.float32)
            vectors[bucket] = out  # back to request order
        assert vectors is not None
        tokens = np.asarray(lengths, dtype=np.int32)
        truncated = np.asarray([len(e.overflowing) > 0 for e in encodings], dtype=bool)
        return vectors, tokens, truncated

    def execute(self, requests: list[Any]) -> list[Any]:
        texts: list[str] = []
        counts: list[int] = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            decoded = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in raw]
            texts.extend(decoded)
            counts.append(len(decoded))
        vectors, tokens, truncated = self._encode(texts)
        responses = []
        start = 0
        for count in counts:
            end = start + count
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("EMBEDDING", vectors[start:end]),
                        pb_utils.Tensor("TOKENS", tokens[start:end].reshape(-1, 1)),
                        pb_utils.Tensor("TRUNCATED", truncated[start:end].reshape(-1, 1)),
                    ]
                )
            )
            start = end
        return responses

    def finalize(self) -> None:
        self.session = None
