"""CLIP / SigLIP text tower (open_clip export) for the Triton Python backend.

Copied into <repository>/clip_text/1/model.py by scripts/export_production_models.py.
Cleans the text as open_clip's tokenizer does (`text_clean`), tokenizes with the
exported `tokenizer.json` (HuggingFace `tokenizers`), pads to the fixed
`context_length`, runs `model.onnx` (input_ids [N, L] -> features [N, D]) with
ONNX Runtime and L2-normalizes. `TOKENS` counts the tokens read (special
tokens included, padding not), after truncation.

`TextEncoder` does not need Triton: the export script runs it to check the ONNX
model and the tokenization against open_clip before writing the repository.
"""

from __future__ import annotations

import html
import json
import os
import re
import string
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton (export self-check)
    pb_utils = None

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _basic_clean(text: str) -> str:
    try:  # open_clip runs ftfy when it is installed; it only repairs mojibake
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    return html.unescape(html.unescape(text)).strip()


def clean_text(text: str, mode: str) -> str:
    """open_clip's tokenizer cleaning: "clip" (SimpleTokenizer), "whitespace",
    "lower" or "canonicalize" (HFTokenizer's `clean` argument)."""
    if mode == "canonicalize":
        text = _basic_clean(text).replace("_", " ").translate(_PUNCTUATION).lower()
    elif mode in ("lower", "clip"):
        text = _basic_clean(text).lower()
    elif mode != "whitespace":
        raise ValueError(f"unknown text_clean {mode!r}")
    return re.sub(r"\s+", " ", text).strip()


def providers_for(args: dict[str, Any]) -> list[Any]:
    if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [
            ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}),
            "CPUExecutionProvider",
        ]
    return ["CPUExecutionProvider"]


class TextEncoder:
    def __init__(self, version_dir: str, params: dict[str, str], providers: list[Any]) -> None:
        self.context_length = int(params.get("context_length", "77"))
        self.clean = params.get("text_clean", "clip")
        self.tokenizer = Tokenizer.from_file(os.path.join(version_dir, "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.context_length)
        self.tokenizer.enable_padding(pad_id=int(params.get("pad_id", "0")), length=self.context_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        self.session = ort.InferenceSession(
            os.path.join(version_dir, "model.onnx"), options, providers=providers
        )
        self.input_name = self.session.get_inputs()[0].name

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch([clean_text(t, self.clean) for t in texts])
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), self.context_length)
        tokens = np.asarray([sum(e.attention_mask) for e in encodings], dtype=np.int32)
        truncated = np.asarray([len(e.overflowing) > 0 for e in encodings], dtype=bool)
        return ids, tokens, truncated

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, tokens, truncated = self.tokenize(texts)
        features = self.session.run(None, {self.input_name: ids})[0].astype(np.float32)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return (features / np.clip(norms, 1e-12, None)).astype(np.float32), tokens, truncated


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.encoder = TextEncoder(version_dir, params, providers_for(args))

    def execute(self, requests: list[Any]) -> list[Any]:
        texts: list[str] = []
        counts: list[int] = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            decoded = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in raw]
            texts.extend(decoded)
            counts.append(len(decoded))
        vectors, tokens, truncated = self.encoder.encode(texts)
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
        self.encoder = None
