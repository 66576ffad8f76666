"""Cross-encoder reranker (e.g. cross-encoder/ms-marco-MiniLM-L-6-v2) for the
Triton Python backend.

Copied into <repository>/crossencoder_rerank/1/model.py by
scripts/export_production_models.py. Each batch row is one (QUERY, DOCUMENT)
pair: the pair is tokenized together with the exported `tokenizer.json`
(HuggingFace `tokenizers`, truncation "longest_first" at `max_tokens`, as
transformers and sentence-transformers' CrossEncoder do), run through
`model.onnx` (input_ids, attention_mask[, token_type_ids] -> logits [N, 1]) with
ONNX Runtime, and the logit is returned as SCORE (higher = more relevant; no
sigmoid, so scores are comparable across requests but not probabilities).

`PairScorer` does not need Triton: the export script runs it to check the ONNX
model and the tokenization against transformers before writing the repository.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton (export self-check)
    pb_utils = None


def providers_for(args: dict[str, Any]) -> list[Any]:
    if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [
            ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}),
            "CPUExecutionProvider",
        ]
    return ["CPUExecutionProvider"]


def _decode(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


class PairScorer:
    def __init__(self, version_dir: str, params: dict[str, str], providers: list[Any]) -> None:
        self.tokenizer = Tokenizer.from_file(os.path.join(version_dir, "tokenizer.json"))
        self.tokenizer.enable_truncation(
            max_length=int(params.get("max_tokens", "512")), strategy="longest_first"
        )
        self.tokenizer.enable_padding(pad_id=int(params.get("pad_id", "0")))
        self.batch_size = int(params.get("encode_batch_size", "32"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        self.session = ort.InferenceSession(
            os.path.join(version_dir, "model.onnx"), options, providers=providers
        )
        self.input_names = {i.name for i in self.session.get_inputs()}

    def _run(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(pairs)
        feeds = {
            "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
        }
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.asarray([e.type_ids for e in encodings], dtype=np.int64)
        logits = self.session.run(None, feeds)[0]
        return np.asarray(logits, dtype=np.float32).reshape(len(pairs), -1)[:, 0]

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """Logits [N]; pairs are run in length-sorted sub-batches to limit padding."""
        scores = np.zeros(len(pairs), dtype=np.float32)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            scores[chunk] = self._run([pairs[i] for i in chunk])
        return scores


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.scorer = PairScorer(version_dir, params, providers_for(args))

    def execute(self, requests: list[Any]) -> list[Any]:
        pairs: list[tuple[str, str]] = []
        counts: list[int] = []
        for request in requests:
            queries = pb_utils.get_input_tensor_by_name(request, "QUERY").as_numpy().reshape(-1)
            documents = pb_utils.get_input_tensor_by_name(request, "DOCUMENT").as_numpy().reshape(-1)
            decode = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in (*queries, *documents)
            ]
            pairs.extend(zip(decode[: len(queries)], decode[len(queries) :], strict=True))
            counts.append(len(queries))
        scores = self.scorer.score(pairs)
        responses = []
        start = 0
        for count in counts:
            end = start + count
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("SCORE", scores[start:end].reshape(-1, 1))]
                )
            )
            start = end
        return responses

    def finalize(self) -> None:
        self.scorer = None
