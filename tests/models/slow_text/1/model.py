"""Slow text encoder for tests: a deterministic 384-d vector per text (from a
hash of its words), after sleeping `seconds_per_word` for every word of the
whole batch, as a real encoder's time grows with the tokens it reads."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        params = json.loads(args["model_config"]).get("parameters", {})
        self.seconds_per_word = float(params["seconds_per_word"]["string_value"])

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            batches.append([v.decode("utf-8", "replace") for v in raw])
        time.sleep(self.seconds_per_word * sum(len(t.split()) for texts in batches for t in texts))
        responses = []
        for texts in batches:
            vectors = np.stack([self._vector(t) for t in texts]).astype(np.float32)
            tokens = np.asarray([[len(t.split()) + 2] for t in texts], dtype=np.int32)
            truncated = np.zeros((len(texts), 1), dtype=bool)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("EMBEDDING", vectors),
                        pb_utils.Tensor("TOKENS", tokens),
                        pb_utils.Tensor("TRUNCATED", truncated),
                    ]
                )
            )
        return responses

    @staticmethod
    def _vector(text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        vector = np.random.default_rng(seed).standard_normal(384)
        return vector / np.linalg.norm(vector)
