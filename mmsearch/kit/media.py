"""Safe decoding of untrusted image and audio bytes into model inputs.

Every failure to decode is the caller's bad input (INVALID_ARGUMENT naming the
field); sizes over the limits are RESOURCE_EXHAUSTED. The real format is
sniffed from the bytes; a declared MIME type must agree with it. These run in
a worker thread (CPU-bound), never on the event loop.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soundfile
import soxr
from PIL import Image, ImageFile, ImageOps

from mmsearch.kit.errors import InvalidArgument, ResourceExhausted

IMAGE_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
# MIME aliases seen in the wild for the same formats.
MIME_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-ms-bmp": "image/bmp"}
AUDIO_MIME_FORMATS = {
    "audio/wav": "WAV",
    "audio/x-wav": "WAV",
    "audio/wave": "WAV",
    "audio/vnd.wave": "WAV",
    "audio/flac": "FLAC",
    "audio/x-flac": "FLAC",
    "audio/ogg": "OGG",
    "audio/opus": "OGG",
    "audio/mpeg": "MP3",
    "audio/mp3": "MP3",
    "audio/aiff": "AIFF",
    "audio/x-aiff": "AIFF",
}
CLASSIFIER_SIDE = 224
MPEG_FRAME_SYNC = re.compile(rb"\xff[\xe0-\xff]")
# Pillow warns (rather than fails) on damaged TIFF/EXIF tags; the input is
# untrusted and the outcome is reported through errors, not log noise.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


# Modes Pillow resamples as they are (palette and 1-bit images are converted first).
RESIZABLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "I", "F"})


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    # Longest side: a 1 x 50,000,000 PNG is under any sane pixel limit and still
    # costs hundreds of MB to decode and resize; checked from the header, before decoding.
    max_side: int = 16_384


def decode_image(
    data: bytes,
    mime_type: str,
    limits: ImageLimits,
    field: str,
    *,
    min_side: int | None = None,
    max_side: int | None = None,
) -> Image.Image:
    """Decode to an upright RGB image (EXIF orientation applied, alpha over white).
    With `min_side`, a JPEG may be decoded at a reduced scale that still has
    at least that many pixels per side (much cheaper for big photos). With
    `max_side`, the image is downscaled to it in its stored mode, before the RGB
    conversion: a 7000 x 7000 grey page then peaks near 100 MB, not the ~450 MB of
    converting (and copying) it at full size first."""
    if not data:
        raise InvalidArgument("image is empty", field=field)
    if len(data) > limits.max_bytes:
        raise ResourceExhausted(f"{field}: {len(data)} bytes; the image limit is {limits.max_bytes}")
    try:
        image: Image.Image = Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS))
    except Image.DecompressionBombError as exc:
        raise ResourceExhausted(f"{field}: image over the pixel limit ({exc})") from exc
    except Exception as exc:  # any failure on untrusted bytes is bad input
        raise InvalidArgument(
            f"not a decodable image (JPEG, PNG, WebP, GIF, BMP, TIFF): {type(exc).__name__}",
            field=field,
        ) from exc
    declared = MIME_ALIASES.get(mime_type.lower(), mime_type.lower())
    actual = IMAGE_FORMATS.get(str(image.format), "")
    if declared and declared != actual:
        raise InvalidArgument(f"mime_type is {mime_type!r} but the bytes are {actual}", field=field)
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidArgument("image has no pixels", field=field)
    if width * height > limits.max_pixels:
        raise ResourceExhausted(f"{field}: {width}x{height} pixels; the limit is {limits.max_pixels}")
    if max(width, height) > limits.max_side:
        raise ResourceExhausted(
            f"{field}: {width}x{height} pixels; the longest side may be {limits.max_side}"
        )
    try:
        if min_side is not None and isinstance(image, ImageFile.ImageFile):
            image.draft("RGB", (min_side, min_side))
        image.load()
        # A broken EXIF block is common: then the pixels are kept as stored.
        with contextlib.suppress(Exception):
            image = ImageOps.exif_transpose(image)
        if max_side is not None and max(image.size) > max_side and image.mode in RESIZABLE_MODES:
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        return image.convert("RGB")
    except Exception as exc:
        raise InvalidArgument(f"corrupt image data: {type(exc).__name__}", field=field) from exc


def declared_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the image header alone (nothing decoded); None when the
    bytes are not an image Pillow can open (decode_image then says why)."""
    try:
        with Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS)) as image:
            width, height = image.size
    except Exception:  # untrusted bytes: the full decode reports the error
        return None
    return int(width), int(height)


def ocr_pixel_cost(size: tuple[int, int], max_side: int) -> int:
    """Pixels OCR works on for an image of `size` once downscaled to `max_side`."""
    width, height = size
    scale = min(1.0, max_side / max(width, height, 1))
    return int(width * scale) * int(height * scale)


def classifier_pixels(image: Image.Image, side: int = CLASSIFIER_SIDE) -> npt.NDArray[np.uint8]:
    """Shorter side to `side` (bicubic), then a centered side x side crop."""
    width, height = image.size
    scale = side / min(width, height)
    resized = image.resize(
        (max(side, round(width * scale)), max(side, round(height * scale))), Image.Resampling.BICUBIC
    )
    left = (resized.width - side) // 2
    top = (resized.height - side) // 2
    return np.asarray(resized.crop((left, top, left + side, top + side)), dtype=np.uint8)


def ocr_pixels(image: Image.Image, max_side: int) -> npt.NDArray[np.uint8]:
    """The full image for OCR, downscaled only when a side is over `max_side`."""
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int
    # Audio past this is not read (and the embedding says truncated).
    max_seconds: float
    sample_rate: int


@dataclass(frozen=True)
class DecodedAudio:
    samples: npt.NDArray[np.float32]
    seconds: float
    truncated: bool


def _open_sound(data: bytes) -> soundfile.SoundFile:
    try:
        return soundfile.SoundFile(io.BytesIO(data))
    except soundfile.LibsndfileError:
        # Some MP3s start with a damaged Xing/Info frame that libsndfile does not
        # skip: retry once from the first MPEG frame sync after the ID3 tag.
        sync = MPEG_FRAME_SYNC.search(data, 1)
        if sync is None:
            raise
        return soundfile.SoundFile(io.BytesIO(data[sync.start() :]))


def decode_audio(data: bytes, mime_type: str, limits: AudioLimits, field: str) -> DecodedAudio:
    """Decode WAV / FLAC / OGG (Vorbis, Opus) / MP3 / AIFF to mono float32 at
    the model's sample rate, reading at most `max_seconds`."""
    if not data:
        raise InvalidArgument("audio is empty", field=field)
    if len(data) > limits.max_bytes:
        raise ResourceExhausted(f"{field}: {len(data)} bytes; the audio limit is {limits.max_bytes}")
    declared = mime_type.lower()
    if declared and declared not in AUDIO_MIME_FORMATS:
        raise InvalidArgument(f"unsupported audio mime_type {mime_type!r}", field=field)
    try:
        sound_file = _open_sound(data)
        with sound_file as sound:
            rate = int(sound.samplerate)
            if rate <= 0 or sound.channels <= 0:
                raise ValueError("bad header")
            if declared and AUDIO_MIME_FORMATS[declared] != sound.format:
                raise InvalidArgument(
                    f"mime_type is {mime_type!r} but the bytes are {sound.format}", field=field
                )
            wanted = int(limits.max_seconds * rate)
            samples = sound.read(frames=wanted + 1, dtype="float32", always_2d=True)
    except InvalidArgument:
        raise
    except Exception as exc:  # any failure on untrusted bytes is bad input
        raise InvalidArgument(
            f"not decodable audio (WAV, FLAC, OGG, MP3, AIFF): {type(exc).__name__}", field=field
        ) from exc
    truncated = samples.shape[0] > wanted
    mono = np.nan_to_num(samples[:wanted].mean(axis=1), nan=0.0, posinf=0.0, neginf=0.0)
    if mono.size == 0:
        raise InvalidArgument("audio has no samples", field=field)
    if rate != limits.sample_rate:
        mono = soxr.resample(mono, rate, limits.sample_rate, quality="HQ")
        if mono.size == 0:
            raise InvalidArgument("audio is shorter than one sample at the model's rate", field=field)
    clipped = np.clip(mono, -1.0, 1.0).astype(np.float32)
    return DecodedAudio(clipped, seconds=mono.size / limits.sample_rate, truncated=truncated)
