"""CLIP / SigLIP image tower (open_clip export) for the Triton Python backend.

Copied into <repository>/clip_image/1/model.py by scripts/export_production_models.py.
PIXELS arrive as RGB uint8 [N, 224, 224, 3], already decoded, EXIF-rotated,
resized (shorter side 224, bicubic) and center-cropped by the embedder. Here
they are scaled to [0, 1], normalized with the model's mean/std (parameters
`image_mean`, `image_std`), transposed to NCHW, run through `model.onnx`
(pixels [N, 3, 224, 224] -> features [N, D]) with ONNX Runtime, and L2-normalized.

`ImageEncoder` does not need Triton: the export script runs it to check the
ONNX model and the normalization against open_clip before writing the repository.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort

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


def _floats(value: str) -> np.ndarray:
    return np.asarray([float(v) for v in value.split(",")], dtype=np.float32).reshape(1, 3, 1, 1)


class ImageEncoder:
    def __init__(self, version_dir: str, params: dict[str, str], providers: list[Any]) -> None:
        self.mean = _floats(params["image_mean"])
        self.std = _floats(params["image_std"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        self.session = ort.InferenceSession(
            os.path.join(version_dir, "model.onnx"), options, providers=providers
        )
        self.input_name = self.session.get_inputs()[0].name

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> float32 [N, 3, H, W], as open_clip's ToTensor + Normalize."""
        chw = pixels.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        return np.ascontiguousarray((chw - self.mean) / self.std, dtype=np.float32)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        features = self.session.run(None, {self.input_name: self.normalize(pixels)})[0].astype(np.float32)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return (features / np.clip(norms, 1e-12, None)).astype(np.float32)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.encoder = ImageEncoder(version_dir, params, providers_for(args))

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [pb_utils.get_input_tensor_by_name(r, "PIXELS").as_numpy() for r in requests]
        vectors = self.encoder.encode(np.concatenate(batches, axis=0))
        responses = []
        start = 0
        for batch in batches:
            end = start + batch.shape[0]
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("EMBEDDING", vectors[start:end])])
            )
            start = end
        return responses

    def finalize(self) -> None:
        self.encoder = None
