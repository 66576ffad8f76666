"""The ppocr_text Triton model on a private tritonserver whose repository holds only
that model: a rendered sentence is read back, a blank image gives no lines, boxes lie
inside the image, and several lines come back in reading order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image, ImageDraw, ImageFont

from mmsearch.dev.processes import free_port, stop_pid
from mmsearch.dev.triton import TritonPorts, start_triton
from tests.conftest import MODEL_REPOSITORY, TRITON_VENV

pytestmark = pytest.mark.integration

MODEL = "ppocr_text"
MODEL_DIR = MODEL_REPOSITORY / MODEL
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

# Clean rendered English is read without a single error in bench/ocr_accuracy.py (CER
# 0.000 on the word/sentence/identifier/paragraph sets). 0.05 allows ~2 edits in this
# 45-character sentence (a dropped space, one confusable glyph with another font), while
# any real pipeline fault (BGR/RGB swap, charset off by one, wrong normalization, box
# scaling) gives CER far above 0.5.
MAX_CER = 0.05


@dataclass
class Reading:
    text: str
    lines: list[str]
    scores: np.ndarray
    boxes: np.ndarray


@dataclass
class Served:
    client: grpcclient.InferenceServerClient

    def read(self, image: np.ndarray) -> Reading:
        tensor = grpcclient.InferInput("IMAGE", list(image.shape), "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(image, dtype=np.uint8))
        outputs = [grpcclient.InferRequestedOutput(n) for n in ("TEXT", "LINES", "SCORES", "BOXES")]
        result = self.client.infer(MODEL, [tensor], outputs=outputs, client_timeout=60)
        text = result.as_numpy("TEXT")
        lines = result.as_numpy("LINES")
        assert text.shape == (1,)
        assert lines.ndim == 1
        return Reading(
            text[0].decode("utf-8"),
            [v.decode("utf-8") for v in lines],
            result.as_numpy("SCORES"),
            result.as_numpy("BOXES"),
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not (MODEL_DIR / "1" / "rec.onnx").exists():
        pytest.fail(f"{MODEL_DIR} is not built: run `make models`")
    root = tmp_path_factory.mktemp("ppocr_triton")
    repo = root / "repo"
    repo.mkdir()
    (repo / MODEL).symlink_to(MODEL_DIR, target_is_directory=True)
    ports = TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())
    process = start_triton(TRITON_VENV, repo, ports, root / "triton.log")
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports.grpc}")
    try:
        yield Served(client)
    finally:
        client.close()
        stop_pid(process.pid, timeout_s=20)
        process.wait(timeout=5)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.truetype(str(DEJAVU), size) if DEJAVU.exists() else ImageFont.load_default(size=size)


def render(rows: list[list[tuple[int, str]]], size: int = 28, width: int = 900) -> np.ndarray:
    """Dark text on white; each row is a list of (x, text) placed on one baseline."""
    font = _font(size)
    height = 40 + len(rows) * int(size * 1.9)
    image = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for r, row in enumerate(rows):
        for x, text in row:
            draw.text((x, 20 + r * int(size * 1.9)), text, font=font, fill=(15, 15, 15))
    return np.asarray(image, dtype=np.uint8)


def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def assert_boxes_inside(reading: Reading, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    n = len(reading.lines)
    assert reading.boxes.shape == (n, 4) and reading.boxes.dtype == np.int32
    assert reading.scores.shape == (n,) and reading.scores.dtype == np.float32
    assert np.all((reading.scores >= 0) & (reading.scores <= 1))
    x, y, bw, bh = reading.boxes.T
    assert np.all(x >= 0) and np.all(y >= 0)
    assert np.all(bw > 0) and np.all(bh > 0)
    assert np.all(x + bw <= w) and np.all(y + bh <= h)


def test_rendered_sentence_is_read_back(served: Served) -> None:
    sentence = "Invoice INV-2024-00731 is due on 15 March 2025"
    image = render([[(30, sentence)]])
    reading = served.read(image)
    cer = levenshtein(" ".join(reading.lines), sentence) / len(sentence)
    assert cer < MAX_CER, (reading.lines, cer)
    assert reading.text == "\n".join(reading.lines)
    assert_boxes_inside(reading, image)
    # The box sits around the ink: inside the left margin, one text line high, most of the width.
    x, y, bw, bh = reading.boxes[0]
    assert 10 <= x <= 40 and 10 <= y <= 35 and 20 <= bh <= 60 and bw >= 400


def test_blank_and_tiny_images_give_no_lines(served: Served) -> None:
    for image in (
        np.full((240, 320, 3), 255, dtype=np.uint8),
        np.zeros((64, 64, 3), dtype=np.uint8),
        np.full((1, 1, 3), 128, dtype=np.uint8),
    ):
        reading = served.read(image)
        assert reading.text == ""
        assert reading.lines == []
        assert reading.scores.shape == (0,)
        assert reading.boxes.shape == (0, 4)


def test_lines_come_back_in_reading_order(served: Served) -> None:
    rows = [
        [(30, "Quarterly report")],
        [(30, "ALPHA"), (620, "OMEGA")],
        [(30, "Revenue grew by 12 percent")],
        [(30, "Contact sales today")],
    ]
    image = render(rows)
    reading = served.read(image)
    assert_boxes_inside(reading, image)
    expected = ["Quarterly report", "ALPHA", "OMEGA", "Revenue grew by 12 percent", "Contact sales today"]
    assert reading.lines == expected, reading.lines
    # Rows go down the image; within the ALPHA/OMEGA row, left before right.
    ys = reading.boxes[:, 1]
    assert ys[0] < ys[1] < ys[3] < ys[4]
    assert reading.boxes[1, 0] < reading.boxes[2, 0]
