"""Build model_repository/aisfx_audio/1: the aiSFX sound-effects encoder
(Ma & Lerch, ISMIR 2022, model "X-Sequential-CE"), exported to ONNX.

1. The checkpoint inside the pinned aisfx wheel (checked against a pinned
   sha256) is loaded into aiSFX's own CrossNet(EmbeddingNet('max', 3, 1, 64))
   and its embedding path (`CrossNet.get_embedding`) is exported to ONNX:
   `model.onnx`, input `blocks` [N, 100, 96] (normalized log-mel blocks of
   100 frames = 2.3 s), output `embedding` [N, 512]. The per-dataset
   classification heads are not exported: their class names are not published
   (see model_repository/aisfx_audio/README.md).
2. `mel_filterbank.npy` [1025, 96]: the mel filterbank of aiSFX's librosa
   front end (aisfx/spectrogram/spectrogram_librosa.py with the wheel's pinned
   librosa==0.9.2: `filters.mel(sr=44100, n_fft=2048, n_mels=96, fmin=0,
   fmax=22050, htk=True, norm=1.0)`), reproduced in numpy so that neither
   librosa nor torch is needed at serve time.
3. `selfcheck_waveform.npy` / `selfcheck_embedding.npy`: a synthetic clip and
   its clip embedding computed here with torch and a float64 front end; the
   integration test checks the served model (numpy 1.26 + ONNX Runtime)
   against it.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
from wheels import REPO, sha256_of, unpacked, write_sources

MODEL = REPO / "aisfx_audio"
VERSION_DIR = MODEL / "1"
MEMBER = "aisfx/models/checkpoint.pth"
CHECKPOINT_SHA256 = "499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5"
STAMP = VERSION_DIR / "BUILD.json"
BUILD_VERSION = "1"  # bump when this script's output changes
OUTPUTS = ("model.onnx", "mel_filterbank.npy", "selfcheck_waveform.npy", "selfcheck_embedding.npy")

# aisfx/inference.py
SAMPLE_RATE = 44100
N_FFT = 2048  # SPEC_BLOCK_LENGTH; librosa's n_fft default and win_length
HOP = 1024  # SPEC_HOP_LENGTH
N_MELS = 96
F_MIN, F_MAX = 0.0, 22050.0
BLOCK = 100  # EMB_BLOCK_LENGTH frames
BLOCK_HOP = 50  # emb_hop_size=0.5, as in the paper
# aisfx/preprocessing.py spectrogram_normalize(spec_norm='original'): min 0, max ...
SPEC_MAX = 9.457798957824707


def _hz_to_mel_htk(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz_htk(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank() -> np.ndarray:
    """librosa 0.9.2 `filters.mel(..., htk=True, norm=1.0)`, transposed to [1025, 96].

    In librosa 0.9.2 a numeric `norm` means `util.normalize(weights, norm=1.0,
    axis=-1)`: each triangle is scaled to unit L1 norm (its weights sum to 1).
    That is Essentia's `normalize='unit_sum'`, which the original (Essentia)
    training front end used; it is NOT Slaney area normalization (`norm='slaney'`,
    which `norm=1` meant only in librosa <= 0.7)."""
    fftfreqs = np.fft.rfftfreq(n=N_FFT, d=1.0 / SAMPLE_RATE)
    mels = np.linspace(_hz_to_mel_htk(np.float64(F_MIN)), _hz_to_mel_htk(np.float64(F_MAX)), N_MELS + 2)
    mel_f = _mel_to_hz_htk(mels)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((N_MELS, N_FFT // 2 + 1))
    for i in range(N_MELS):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    sums = weights.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise SystemExit("empty mel filter: the front-end constants have changed")
    return (weights / sums).T.astype(np.float32)


def log_mel_blocks(wave: np.ndarray, fbank: np.ndarray) -> np.ndarray:
    """Reference front end in float64 (the served model.py does the same in its
    own code): peak-normalize, centered zero-padded periodic-Hann STFT, power,
    mel, log10(1e4 x + 1), / SPEC_MAX, then 100-frame blocks at hop 50 plus one
    block aligned to the end (zero-padded when the clip is shorter)."""
    y = wave.astype(np.float64)
    peak = np.max(np.abs(y)) if y.size else 0.0
    y = y / (peak if peak > 0 else 1.0)
    y = np.pad(y, N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(y, N_FFT)[::HOP]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    spec = np.log10(power @ fbank.astype(np.float64) * 1e4 + 1.0) / SPEC_MAX
    t = spec.shape[0]
    if t <= BLOCK:
        return np.pad(spec, ((0, BLOCK - t), (0, 0)))[None]
    starts = list(range(0, t - BLOCK + 1, BLOCK_HOP))
    if starts[-1] + BLOCK < t:
        starts.append(t - BLOCK)
    return np.stack([spec[s : s + BLOCK] for s in starts])


def selfcheck_waveform() -> np.ndarray:
    """3.3 s: a rising chirp, then a decaying 440 Hz tone with harmonics."""
    t = np.arange(int(3.3 * SAMPLE_RATE)) / SAMPLE_RATE
    chirp = 0.4 * np.sin(2 * np.pi * (200 * t + 1200 * t**2)) * (t < 1.6)
    tone = sum(0.3 / k * np.sin(2 * np.pi * 440 * k * t) for k in (1, 2, 3, 5)) * np.exp(-2 * (t - 1.6))
    return (chirp + tone * (t >= 1.6)).astype(np.float32)


def export(checkpoint: str) -> np.ndarray:
    """Export the embedding path to ONNX; return the self-check embedding."""
    import torch

    unpacked("aisfx-", importable=True)
    from aisfx.models.cnn2d import CrossNet, EmbeddingNet  # aisfx.inference needs tqdm

    # The checkpoint pickles (state_dict, ds_dict) with numpy ints, so it cannot be
    # read with weights_only=True; its sha256 was checked against the pin above.
    weights, ds_dict = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = CrossNet(EmbeddingNet("max", 3, 1, 64), ds_dict, "cpu")
    model.load_state_dict(weights)
    model.eval()

    class Embedding(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, blocks: torch.Tensor) -> torch.Tensor:
            return self.net.get_embedding(blocks)

    wrapper = Embedding(model).eval()
    # dynamo=False is the TorchScript exporter on purpose; it warns that it is legacy.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=__name__)
    target = VERSION_DIR / "model.onnx"
    tmp = target.with_suffix(".onnx.part")
    # The TorchScript exporter's tracer and constant-folding notes are not actionable here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (torch.zeros(2, BLOCK, N_MELS),),
            str(tmp),
            input_names=["blocks"],
            output_names=["embedding"],
            dynamic_axes={"blocks": {0: "n"}, "embedding": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
    import onnx

    onnx.checker.check_model(str(tmp))
    tmp.replace(target)

    fbank = mel_filterbank()
    blocks = log_mel_blocks(selfcheck_waveform(), fbank)
    with torch.no_grad():
        per_block = wrapper(torch.from_numpy(blocks.astype(np.float32))).numpy().astype(np.float64)
    pooled = per_block.mean(axis=0)
    return (pooled / np.linalg.norm(pooled)).astype(np.float32)


def main() -> None:
    wanted = {"build": BUILD_VERSION, "checkpoint_sha256": CHECKPOINT_SHA256}
    built = all((VERSION_DIR / name).exists() for name in OUTPUTS)
    if built and STAMP.exists() and json.loads(STAMP.read_text()) == wanted:
        print("aisfx_audio/1  ok (built)")
        return
    checkpoint = unpacked("aisfx-") / MEMBER
    actual = sha256_of(checkpoint)
    if actual != CHECKPOINT_SHA256:
        raise SystemExit(f"{MEMBER}: sha256 {actual} != pinned {CHECKPOINT_SHA256}")
    VERSION_DIR.mkdir(parents=True, exist_ok=True)
    STAMP.unlink(missing_ok=True)
    embedding = export(str(checkpoint))
    np.save(VERSION_DIR / "mel_filterbank.npy", mel_filterbank())
    np.save(VERSION_DIR / "selfcheck_waveform.npy", selfcheck_waveform())
    np.save(VERSION_DIR / "selfcheck_embedding.npy", embedding)
    write_sources(
        VERSION_DIR,
        [
            {"file": "model.onnx", "from": MEMBER, "sha256": CHECKPOINT_SHA256},
            {
                "file": "mel_filterbank.npy",
                "from": "aisfx/spectrogram/spectrogram_librosa.py: librosa 0.9.2 filters.mel"
                "(sr=44100, n_fft=2048, n_mels=96, fmin=0, fmax=22050, htk=True, norm=1.0), in numpy",
            },
            {"file": "selfcheck_waveform.npy", "from": "synthetic (build_aisfx_audio.py)"},
            {"file": "selfcheck_embedding.npy", "from": f"{MEMBER} with torch, float64 front end"},
        ],
    )
    STAMP.write_text(json.dumps(wanted) + "\n")
    print(f"aisfx_audio/1  built ({embedding.shape[0]}-d embedding)")


if __name__ == "__main__":
    main()
