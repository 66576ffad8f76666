"""ConSE image encoder for the Triton Python backend.

EfficientNet-Lite0 (ONNX Runtime) gives ImageNet class probabilities p; the
image vector is sum over the top-T classes of p_c * e_c, L2-normalized, where
e_c is the text space's embedding of class c's prompts (precomputed by
scripts/models/build_efficientnet_conse.py with the text model's own files).
The vector therefore lives in the text space: a sentence finds photos.

Triton's dynamic batcher hands `execute` a LIST of requests: they are
concatenated into one ONNX Runtime call and the outputs split back per request.

Memory: ONNX Runtime's CPU arena keeps its peak allocation for the life of the
process (a batch of 32 images took the process from ~100 to ~530 MB for good);
`memory_arena` "shrink" (the default) returns it after every run.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# EfficientNet-Lite was trained on inputs scaled to [-1, 1].
MEAN = np.float32(127.0)
STD = np.float32(128.0)
LABELS_OUT = 5


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.top_t = int(params.get("top_t", "10"))
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        # Idle ORT threads spin by default, taking CPU from the batcher, the stub
        # and other instances on the same cores; off unless configured.
        options.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        # Memory patterns are cached per input shape, and every batch size is a new shape.
        options.enable_mem_pattern = False
        arena = params.get("memory_arena", "shrink")
        options.enable_cpu_mem_arena = arena != "off"
        self.run_options = ort.RunOptions()
        if arena == "shrink":
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.session = ort.InferenceSession(
            os.path.join(version_dir, "classifier.onnx"),
            options,
            providers=["CPUExecutionProvider"],
        )
        self.class_vectors = np.load(os.path.join(version_dir, "class_embeddings.npy"))
        with open(os.path.join(version_dir, "class_names.json"), encoding="utf-8") as handle:
            self.class_names = np.asarray([n.encode() for n in json.load(handle)], dtype=object)

    def _encode(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = ((pixels.astype(np.float32) - MEAN) / STD).transpose(0, 3, 1, 2)
        logits = self.session.run(None, {"pixels": np.ascontiguousarray(x)}, self.run_options)[0]
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        order = np.argsort(-probs, axis=1)
        top = order[:, : self.top_t]
        weights = np.take_along_axis(probs, top, axis=1)
        vectors = np.einsum("bt,btd->bd", weights, self.class_vectors[top])
        vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        best = order[:, :LABELS_OUT]
        labels = self.class_names[best]
        scores = np.take_along_axis(probs, best, axis=1).astype(np.float32)
        return vectors.astype(np.float32), labels, scores

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [pb_utils.get_input_tensor_by_name(r, "PIXELS").as_numpy() for r in requests]
        vectors, labels, scores = self._encode(np.concatenate(batches))
        responses = []
        start = 0
        for batch in batches:
            end = start + len(batch)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("EMBEDDING", vectors[start:end]),
                        pb_utils.Tensor("LABELS", labels[start:end]),
                        pb_utils.Tensor("LABEL_SCORES", scores[start:end]),
                    ]
                )
            )
            start = end
        return responses

    def finalize(self) -> None:
        self.session = None
