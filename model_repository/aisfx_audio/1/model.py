"""aiSFX sound-effects audio encoder for the Triton Python backend.

Front end (numpy, the librosa variant of aiSFX, aisfx/spectrogram/spectrogram_librosa.py
with librosa 0.9.2): peak-normalize the clip, centered zero-padded STFT
(n_fft 2048, periodic Hann, hop 1024) at 44.1 kHz, power, 96 HTK mel bands
(mel_filterbank.npy, built offline), log10(1e4 x + 1), divided by the paper's
global maximum 9.4578. The log-mel frames are cut into 100-frame blocks
(2.3 s) at hop 50 (the paper's emb_hop_size=0.5), plus one block aligned to the
clip's end; a clip shorter than one block is zero-padded (zero is silence in
this log domain). The CNN (model.onnx, ONNX Runtime) gives one 512-d embedding
per block; the clip embedding is their mean, L2-normalized.

Triton's dynamic batcher hands `execute` a LIST of requests (WAVEFORM is a
ragged input, so each request keeps its own length): the blocks of all
requests go through ONNX Runtime together and are pooled back per request.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

N_FFT = 2048
HOP = 1024
BLOCK = 100
SPEC_MAX = 9.457798957824707  # aisfx spectrogram_normalize(spec_norm="original")
MODEL_SAMPLE_RATE = 44100


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.sample_rate = int(params.get("sample_rate", str(MODEL_SAMPLE_RATE)))
        if self.sample_rate != MODEL_SAMPLE_RATE:
            raise ValueError(f"aiSFX was trained at {MODEL_SAMPLE_RATE} Hz, config says {self.sample_rate}")
        self.max_samples = int(float(params.get("max_seconds", "30")) * self.sample_rate)
        self.block_hop = int(params.get("block_hop_frames", "50"))
        self.max_blocks_per_run = max(1, int(params.get("max_blocks_per_run", "32")))
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.fbank = np.load(os.path.join(version_dir, "mel_filterbank.npy")).astype(np.float32)
        self.window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        # Idle ORT threads spin by default, taking CPU from the batcher, the stub
        # and other instances on the same cores; off unless configured.
        options.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        self.session = ort.InferenceSession(
            os.path.join(version_dir, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def _blocks(self, wave: np.ndarray) -> np.ndarray:
        """One clip -> normalized log-mel blocks [n, 100, 96] (float32)."""
        y = np.nan_to_num(wave.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(np.max(np.abs(y))) if y.size else 0.0
        if peak > 0:
            y = y / peak
        y = np.pad(y, N_FFT // 2)
        frames = np.lib.stride_tricks.sliding_window_view(y, N_FFT)[::HOP]
        spectrum = np.fft.rfft(frames * self.window, axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        spec = np.log10(power @ self.fbank * 1e4 + 1.0) / SPEC_MAX
        t = spec.shape[0]
        if t <= BLOCK:
            return np.pad(spec, ((0, BLOCK - t), (0, 0)))[None].astype(np.float32)
        starts = list(range(0, t - BLOCK + 1, self.block_hop))
        if starts[-1] + BLOCK < t:
            starts.append(t - BLOCK)
        return np.stack([spec[s : s + BLOCK] for s in starts]).astype(np.float32)

    def _embed_blocks(self, blocks: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, blocks.shape[0], self.max_blocks_per_run):
            chunk = blocks[start : start + self.max_blocks_per_run]
            out.append(self.session.run(None, {self.input_name: chunk})[0])
        return np.concatenate(out).astype(np.float64)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        blocks: list[np.ndarray] = []
        counts: list[int] = []  # blocks per clip
        seconds: list[float] = []
        clips_per_request: list[int] = []
        for r, request in enumerate(requests):
            wave = pb_utils.get_input_tensor_by_name(request, "WAVEFORM").as_numpy()
            if wave.ndim == 1:
                wave = wave[None]
            if wave.ndim != 2:
                responses[r] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"WAVEFORM must be [batch, samples], got {list(wave.shape)}")
                )
                clips_per_request.append(0)
                continue
            wave = wave[:, : self.max_samples]
            for row in wave:
                clip_blocks = self._blocks(row)
                blocks.append(clip_blocks)
                counts.append(clip_blocks.shape[0])
                seconds.append(row.shape[0] / self.sample_rate)
            clips_per_request.append(wave.shape[0])
        if blocks:
            per_block = self._embed_blocks(np.concatenate(blocks))
            ends = np.cumsum(counts)
            pooled = np.stack([per_block[e - n : e].mean(axis=0) for n, e in zip(counts, ends, strict=True)])
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        else:
            vectors = np.zeros((0, 512), dtype=np.float32)
        secs = np.asarray(seconds, dtype=np.float32).reshape(-1, 1)
        start = 0
        for r, n in enumerate(clips_per_request):
            if responses[r] is not None:
                continue
            end = start + n
            responses[r] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("EMBEDDING", vectors[start:end]),
                    pb_utils.Tensor("SECONDS", secs[start:end]),
                ]
            )
            start = end
        return responses

    def finalize(self) -> None:
        self.session = None
