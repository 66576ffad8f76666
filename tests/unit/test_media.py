"""Decoders of untrusted media: valid files come out in the model's shape; any
other bytes (random, truncated, bit-flipped, bombs) give INVALID_ARGUMENT or
RESOURCE_EXHAUSTED, never another exception."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmsearch.kit.errors import InvalidArgument, ResourceExhausted
from mmsearch.kit.media import (
    AudioLimits,
    ImageLimits,
    classifier_pixels,
    decode_audio,
    decode_image,
    ocr_pixels,
)

IMAGE_LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=4_000_000)
AUDIO_LIMITS = AudioLimits(max_bytes=1 << 22, max_seconds=2.0, sample_rate=16000)


def encode_image(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def encode_audio(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format=fmt)
    return out.getvalue()


def sample_image(width: int, height: int, mode: str) -> Image.Image:
    rng = np.random.default_rng(width * 7919 + height)
    rgb = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(rgb, "RGB").convert(mode)


image_files = st.builds(
    lambda w, h, mode, fmt: (encode_image(sample_image(w, h, mode), fmt), fmt),
    st.integers(1, 64),
    st.integers(1, 64),
    st.sampled_from(["RGB", "L", "RGBA", "P"]),
    st.sampled_from(["PNG", "GIF", "BMP", "TIFF", "WEBP"]),
)


@settings(max_examples=60, deadline=None)
@given(image_files)
def test_valid_images_decode_to_rgb_and_the_classifier_shape(file: tuple[bytes, str]) -> None:
    data, _ = file
    image = decode_image(data, "", IMAGE_LIMITS, "image")
    assert image.mode == "RGB"
    assert classifier_pixels(image).shape == (224, 224, 3)


def mutate(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    buffer = bytearray(data[: max(0, len(data) - cut)])
    for position, value in flips:
        if buffer:
            buffer[position % len(buffer)] = value
    return bytes(buffer)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    source=st.one_of(image_files.map(lambda f: f[0]), st.binary(max_size=512)),
    cut=st.integers(0, 200),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    mime=st.sampled_from(["", "image/png", "image/jpeg", "audio/wav", "application/octet-stream"]),
)
def test_no_image_bytes_crash_the_decoder(
    source: bytes, cut: int, flips: list[tuple[int, int]], mime: str
) -> None:
    try:
        image = decode_image(mutate(source, cut, flips), mime, IMAGE_LIMITS, "items[0].image")
    except (InvalidArgument, ResourceExhausted) as exc:
        assert exc.field == "items[0].image" or "items[0].image" in str(exc)
        return
    assert classifier_pixels(image).shape == (224, 224, 3)


def test_exif_orientation_is_applied() -> None:
    # 40x20 stored, orientation 6 (rotate 90 CW to display): upright it is 20x40.
    stored = sample_image(40, 20, "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode_image(stored, "JPEG", exif=exif.tobytes())
    assert decode_image(data, "image/jpeg", IMAGE_LIMITS, "image").size == (20, 40)


def test_pixel_bombs_and_big_files_are_resource_exhausted() -> None:
    big = encode_image(Image.new("L", (3000, 2000)), "PNG")  # 6 MP, tiny file
    with pytest.raises(ResourceExhausted, match="pixels"):
        decode_image(big, "", IMAGE_LIMITS, "image")
    with pytest.raises(ResourceExhausted, match="bytes"):
        decode_image(b"\x89PNG" + b"\0" * (1 << 20), "", IMAGE_LIMITS, "image")


def test_declared_mime_must_match_the_bytes() -> None:
    data = encode_image(sample_image(8, 8, "RGB"), "PNG")
    assert decode_image(data, "image/png", IMAGE_LIMITS, "image").size == (8, 8)
    with pytest.raises(InvalidArgument, match="bytes are image/png"):
        decode_image(data, "image/jpeg", IMAGE_LIMITS, "image")


def test_transparent_pixels_become_white_and_ocr_keeps_resolution() -> None:
    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    image = decode_image(encode_image(clear, "PNG"), "", IMAGE_LIMITS, "image")
    assert np.asarray(image)[0, 0].tolist() == [255, 255, 255]
    wide = Image.new("RGB", (5000, 100))
    assert ocr_pixels(wide, 4096).shape == (82, 4096, 3)
    assert ocr_pixels(image, 4096).shape == (10, 10, 3)


audio_files = st.builds(
    lambda n, rate, channels, fmt: (
        encode_audio(
            np.random.default_rng(n).uniform(-1, 1, size=(n, channels)).astype(np.float32), rate, fmt
        ),
        n / rate,
    ),
    st.integers(100, 40_000),
    st.sampled_from([8000, 16000, 22050, 44100, 48000]),
    st.integers(1, 3),
    st.sampled_from(["WAV", "FLAC", "OGG"]),
)


@settings(max_examples=40, deadline=None)
@given(audio_files)
def test_valid_audio_is_mono_at_the_model_rate_and_capped(file: tuple[bytes, float]) -> None:
    data, seconds = file
    clip = decode_audio(data, "", AUDIO_LIMITS, "audio")
    expected = min(seconds, AUDIO_LIMITS.max_seconds)
    assert clip.samples.ndim == 1 and clip.samples.dtype == np.float32
    assert abs(clip.samples.size - expected * AUDIO_LIMITS.sample_rate) <= 2 + 0.01 * clip.samples.size
    assert clip.truncated == (seconds > AUDIO_LIMITS.max_seconds + 1e-9)
    assert np.all(np.abs(clip.samples) <= 1.0)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    source=st.one_of(audio_files.map(lambda f: f[0]), st.binary(max_size=512)),
    cut=st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    mime=st.sampled_from(["", "audio/wav", "audio/flac", "image/png"]),
)
def test_no_audio_bytes_crash_the_decoder(
    source: bytes, cut: int, flips: list[tuple[int, int]], mime: str
) -> None:
    try:
        clip = decode_audio(mutate(source, cut, flips), mime, AUDIO_LIMITS, "items[0].audio")
    except (InvalidArgument, ResourceExhausted):
        return
    assert clip.samples.size > 0 and np.all(np.isfinite(clip.samples))


def test_mp3_with_a_damaged_first_frame_and_too_short_audio() -> None:
    from tests.conftest import sample

    # horse.mp3 starts with a zeroed Info frame header: decoded from the next frame sync.
    clip = decode_audio(sample("audio/horse.mp3"), "audio/mpeg", AUDIO_LIMITS, "audio")
    assert clip.seconds > 1.0
    one_sample = encode_audio(np.zeros(1, dtype=np.float32), 44100, "WAV")
    with pytest.raises(InvalidArgument, match="shorter than one sample"):
        decode_audio(one_sample, "audio/wav", AUDIO_LIMITS, "audio")


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG that declares width x height pixels and holds none (issue #12: 75 bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def test_a_tiny_file_declaring_a_huge_strip_is_refused_before_decoding() -> None:
    import tracemalloc

    data = png_header(1, 50_000_000)
    assert len(data) < 100
    limits = ImageLimits(max_bytes=20 << 20, max_pixels=50_000_000)  # the service defaults
    tracemalloc.start()
    with pytest.raises(ResourceExhausted, match="longest side"):
        decode_image(data, "", limits, "query.image")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20  # refused from the header: nothing was allocated for pixels
