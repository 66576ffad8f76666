"""all-MiniLM-L6-v2 text encoder for the Triton Python backend.

Tokenizes with the model's own tokenizer.json (HuggingFace `tokenizers`),
runs the transformer with ONNX Runtime, mean-pools the token states under the
attention mask and L2-normalizes, as sentence-transformers does for this model.

Triton's dynamic batcher hands `execute` a LIST of requests: they are
concatenated into one ONNX Runtime call and the outputs split back per request.
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


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_tokens = int(params.get("max_tokens", "256"))
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = Tokenizer.from_file(os.path.join(version_dir, "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_tokens)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        # Idle ORT threads spin by default, taking CPU from the batcher, the stub
        # and other instances on the same cores; off unless configured.
        options.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        self.session = ort.InferenceSession(
            os.path.join(version_dir, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = {i.name for i in self.session.get_inputs()}

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        tokens = mask.sum(axis=1).astype(np.int32)
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
