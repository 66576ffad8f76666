#!/usr/bin/env python3
"""The text encoder run directly in-process with ONNX Runtime: the baseline for
bench/embedder_throughput.py. Runs in the Triton venv and executes the SAME
model.py the Triton model runs (its Triton-only import is stubbed), so both
paths do identical work. Prints JSON: items/s and latency per batch size."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import numpy as np


def load_model(model_dir: Path) -> object:
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("mm_model", model_dir / "1" / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The same parameters as config.pbtxt.
    params = {"max_tokens": {"string_value": "256"}, "intra_op_threads": {"string_value": "0"}}
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps({"parameters": params}),
            "model_repository": str(model_dir),
            "model_version": "1",
        }
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--texts", type=Path, required=True, help="JSON list of texts")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    texts: list[str] = json.loads(args.texts.read_text())
    model = load_model(args.model_dir)
    results = []
    for batch in args.batch_sizes:
        model._encode(texts[:batch])  # warm-up
        latencies = []
        items = 0
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < args.seconds:
            chunk = [texts[(i + k) % len(texts)] for k in range(batch)]
            t0 = time.perf_counter()
            model._encode(chunk)
            latencies.append(time.perf_counter() - t0)
            items += batch
            i += batch
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
