#!/usr/bin/env python3
"""A Triton model run directly in-process: the baseline for
bench/embedder_throughput.py. Runs in the Triton venv and calls the SAME
model.py `execute` that Triton calls, with `triton_python_backend_utils`
replaced by a minimal in-process stand-in, so both paths do identical model
work (tokenize / ONNX Runtime / pool). Prints JSON: items/s and latency per
batch size.

Inputs are a .npz of preprocessed rows (what the embedder sends to Triton):
`TEXT` (object [n, 1]), `PIXELS` (uint8 [n, 224, 224, 3]) or `WAVEFORM_<i>`
(float32 [samples], one per clip: audio is ragged, one request per clip).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: Any = None) -> None:
        self.output_tensors = output_tensors or []
        self.error = error


class TritonError(Exception):
    pass


class Request:
    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.tensors = tensors


def stand_in() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = Tensor  # type: ignore[attr-defined]
    module.InferenceResponse = InferenceResponse  # type: ignore[attr-defined]
    module.TritonError = TritonError  # type: ignore[attr-defined]
    module.TritonModelException = TritonError  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = lambda request, name: (  # type: ignore[attr-defined]
        Tensor(name, request.tensors[name]) if name in request.tensors else None
    )
    return module


def parse_parameters(config: str) -> dict[str, dict[str, str]]:
    """`parameters { key: "k" value: { string_value: "v" } }` blocks of config.pbtxt."""
    pattern = r'key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"'
    return {k: {"string_value": v} for k, v in re.findall(pattern, config)}


def load_model(model_dir: Path, overrides: dict[str, str] | None = None) -> Any:
    """model.py initialized as Triton would, with config.pbtxt's parameters (and `overrides`)."""
    sys.modules["triton_python_backend_utils"] = stand_in()
    spec = importlib.util.spec_from_file_location("mm_model", model_dir / "1" / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parameters = parse_parameters((model_dir / "config.pbtxt").read_text())
    parameters.update({k: {"string_value": v} for k, v in (overrides or {}).items()})
    config = {"name": model_dir.name, "parameters": parameters}
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(model_dir),
            "model_version": "1",
            "model_name": model_dir.name,
            "model_instance_kind": "CPU",
            "model_instance_name": f"{model_dir.name}_0_0",
        }
    )
    return model


def requests_for(rows: dict[str, np.ndarray], start: int, batch: int) -> list[Request]:
    if "TEXT" in rows or "PIXELS" in rows:
        name = "TEXT" if "TEXT" in rows else "PIXELS"
        data = rows[name]
        index = [(start + k) % len(data) for k in range(batch)]
        return [Request({name: data[index]})]
    clips = [rows[k] for k in sorted(rows, key=lambda k: int(k.split("_")[1]))]
    return [Request({"WAVEFORM": clips[(start + k) % len(clips)][None, :]}) for k in range(batch)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--rows", type=Path, required=True, help=".npz of preprocessed inputs")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    rows = dict(np.load(args.rows, allow_pickle=True))
    model = load_model(args.model_dir)
    results = []
    for batch in args.batch_sizes:
        model.execute(requests_for(rows, 0, batch))  # warm-up
        latencies = []
        items = 0
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            requests = requests_for(rows, items, batch)
            t0 = time.perf_counter()
            responses = model.execute(requests)
            latencies.append(time.perf_counter() - t0)
            assert all(r.error is None for r in responses)
            items += batch
        elapsed = time.perf_counter() - start
        results.append(
            {
                "batch_size": batch,
                "items_per_s": items / elapsed,
                "p50_ms": float(np.percentile(latencies, 50) * 1000),
                "p99_ms": float(np.percentile(latencies, 99) * 1000),
            }
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
