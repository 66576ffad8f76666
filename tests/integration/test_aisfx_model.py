"""The aisfx_audio Triton model on a private tritonserver whose repository holds
only that model: contract, parity with the torch build, real-sound geometry,
ragged dynamic batching and degenerate inputs."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from mmsearch.dev.processes import free_port, stop_pid
from mmsearch.dev.triton import TritonPorts, start_triton
from tests.conftest import MODEL_REPOSITORY, TRITON_VENV
from tests.sound_clips import animal_clips

pytestmark = pytest.mark.integration

MODEL = "aisfx_audio"
MODEL_DIR = MODEL_REPOSITORY / MODEL
VERSION_DIR = MODEL_DIR / "1"
SR = 44100
DIM = 512


@dataclass
class Served:
    client: grpcclient.InferenceServerClient
    ports: TritonPorts
    log: Path

    def infer(self, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        waves = np.asarray(waves, dtype=np.float32)
        if waves.ndim == 1:
            waves = waves[None]
        tensor = grpcclient.InferInput("WAVEFORM", list(waves.shape), "FP32")
        tensor.set_data_from_numpy(waves)
        result = self.client.infer(MODEL, [tensor], client_timeout=60)
        return result.as_numpy("EMBEDDING"), result.as_numpy("SECONDS")

    def embed(self, wave: np.ndarray) -> np.ndarray:
        vectors, _ = self.infer(wave)
        vector: np.ndarray = vectors[0]
        return vector

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.ports.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        match = re.search(rf'^{name}{{model="{MODEL}",version="1"}} (\S+)$', text, re.M)
        assert match, f"{name} for {MODEL} not in metrics"
        return float(match.group(1))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not (VERSION_DIR / "model.onnx").exists():
        pytest.fail(f"{VERSION_DIR} is not built: run `make models`")
    root = tmp_path_factory.mktemp("aisfx_triton")
    repo = root / "repo"
    repo.mkdir()
    (repo / MODEL).symlink_to(MODEL_DIR, target_is_directory=True)
    ports = TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())
    log = root / "triton.log"
    process = start_triton(TRITON_VENV, repo, ports, log)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports.grpc}")
    try:
        yield Served(client, ports, log)
    finally:
        client.close()
        stop_pid(process.pid, timeout_s=20)
        process.wait(timeout=5)


def test_contract_shapes_unit_norm_and_parity_with_torch_build(served: Served) -> None:
    config = served.client.get_model_config(MODEL, as_json=True)["config"]
    params = {k: v["string_value"] for k, v in config["parameters"].items()}
    assert params["sample_rate"] == "44100"
    assert params["max_seconds"] == "30"
    assert "intra_op_threads" in params
    assert int(config["max_batch_size"]) > 0
    assert config["input"][0]["allow_ragged_batch"] is True

    wave = np.load(VERSION_DIR / "selfcheck_waveform.npy")
    vectors, seconds = served.infer(wave)
    assert vectors.shape == (1, DIM) and vectors.dtype == np.float32
    assert seconds.shape == (1, 1)
    assert seconds[0, 0] == pytest.approx(len(wave) / SR, abs=1e-4)
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)
    # numpy 1.26 front end + ONNX Runtime == float64 front end + torch at build time.
    expected = np.load(VERSION_DIR / "selfcheck_embedding.npy")
    assert float(vectors[0] @ expected) > 0.99999


def test_same_clip_twice_is_identical_and_batch_rows_match_singles(served: Served) -> None:
    rng = np.random.default_rng(7)
    wave = (0.3 * rng.standard_normal(3 * SR)).astype(np.float32)
    first, second = served.embed(wave), served.embed(wave)
    np.testing.assert_array_equal(first, second)
    # Several clips of one length in ONE request ([2, samples]): one row each.
    other = np.roll(wave, SR)
    both, seconds = served.infer(np.stack([wave, other]))
    assert both.shape == (2, DIM)
    np.testing.assert_allclose(seconds.ravel(), [3.0, 3.0], atol=1e-4)
    np.testing.assert_allclose(both[0], first, atol=1e-5)


def test_other_sounds_are_further_than_two_crops_of_one_clip(served: Served) -> None:
    clips = animal_clips(SR)
    full = {name: served.embed(wave) for name, wave in clips.items()}
    # Crops: first and last 3 s (overlapping by up to 1 s) of the clips of 5 s or more.
    long = [name for name, wave in clips.items() if len(wave) >= 5 * SR]
    assert len(long) >= 5, f"expected at least 5 long clips, got {long}"
    for name in long:
        wave = clips[name]
        crop_a, crop_b = served.embed(wave[: 3 * SR]), served.embed(wave[-3 * SR :])
        same = float(crop_a @ crop_b)
        nearest_other = max(float(full[name] @ full[o]) for o in full if o != name)
        assert same > nearest_other, f"{name}: crops {same:.3f} <= other sound {nearest_other:.3f}"
        # And a crop retrieves its own clip among all 10 clips.
        best = max(full, key=lambda o: float(crop_a @ full[o]))
        assert best == name, f"first crop of {name} is nearest to {best}"


def test_concurrent_requests_of_different_lengths_are_batched_together(served: Served) -> None:
    rng = np.random.default_rng(3)
    lengths = [4 * SR, 1000, SR, 5 * SR + 17, 300, 2 * SR, SR // 2, 3 * SR]
    waves = [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    singles = [served.embed(w) for w in waves]

    requests_before = served.metric("nv_inference_request_success")
    executions_before = served.metric("nv_inference_exec_count")
    results: list[tuple[object, object] | None] = [None] * len(waves)
    done = threading.Semaphore(0)

    def callback(index: int) -> Callable[[object, object], None]:
        def record(result: object, error: object) -> None:
            results[index] = (result, error)
            done.release()

        return record

    for index, wave in enumerate(waves):
        tensor = grpcclient.InferInput("WAVEFORM", [1, len(wave)], "FP32")
        tensor.set_data_from_numpy(wave[None])
        served.client.async_infer(MODEL, [tensor], callback(index), client_timeout=60)
    for _ in waves:
        assert done.acquire(timeout=60), "async inference did not finish"

    for index, entry in enumerate(results):
        assert entry is not None
        result, error = entry
        assert error is None, error
        assert isinstance(result, grpcclient.InferResult)
        vector = result.as_numpy("EMBEDDING")[0]
        assert result.as_numpy("SECONDS")[0, 0] == pytest.approx(lengths[index] / SR, abs=1e-4)
        # Each request gets back its own clip's vector, unchanged by batching.
        assert float(vector @ singles[index]) > 0.99999
    # Triton's counters reach /metrics a little after the responses: poll.
    deadline = time.monotonic() + 10
    while served.metric("nv_inference_request_success") - requests_before < len(waves):
        assert time.monotonic() < deadline, "request counter did not reach the metrics endpoint"
        time.sleep(0.1)
    executions = served.metric("nv_inference_exec_count") - executions_before
    assert executions >= 1
    # The first request occupies the single instance; the others queue and are
    # merged although their lengths differ (allow_ragged_batch).
    assert executions < len(waves) - 2, f"{len(waves)} requests took {executions} executions"


@pytest.mark.parametrize(
    ("name", "samples"),
    [
        ("empty", np.zeros(0)),
        ("one sample", np.full(1, 0.5)),
        ("10 silent samples", np.zeros(10)),
        ("1 s of silence", np.zeros(SR)),
        ("50 ms tone", 0.5 * np.sin(2 * np.pi * 1000 * np.arange(SR // 20) / SR)),
        ("NaN", np.full(5000, np.nan)),
    ],
)
def test_tiny_and_silent_inputs_give_unit_vectors(served: Served, name: str, samples: np.ndarray) -> None:
    vectors, seconds = served.infer(samples.astype(np.float32))
    assert vectors.shape == (1, DIM)
    assert np.isfinite(vectors).all(), name
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)
    assert seconds[0, 0] == pytest.approx(len(samples) / SR, abs=1e-6)


def test_long_clip_is_cut_at_max_seconds(served: Served) -> None:
    wave = (0.2 * np.random.default_rng(5).standard_normal(int(30.5 * SR))).astype(np.float32)
    vectors, seconds = served.infer(wave)
    assert seconds[0, 0] == pytest.approx(30.0, abs=1e-4)
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)
