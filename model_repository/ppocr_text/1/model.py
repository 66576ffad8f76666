"""PP-OCR text reader (detect -> orient -> recognize) for the Triton Python backend.

The three PP-OCR ONNX models come from the rapidocr 3.10.0 wheel (see README.md).
The pre/post-processing follows rapidocr 3.10.0 / PaddleOCR (Apache-2.0) step by
step, reimplemented with numpy + OpenCV so that no other package is needed:

1. bound the image (longest side <= max_side_len, shortest >= 30), pad very flat
   images vertically, as rapidocr does;
2. DB text detection at det_limit_side_len; probability map -> contours -> min-area
   rectangles -> unclip (the rectangle grown by area * unclip_ratio / perimeter on
   every side, which is what pyclipper's round offset of a rectangle followed by
   another min-area rectangle gives);
3. each text quad is cut out with a perspective warp; a 0/180 degree classifier
   turns upside-down lines;
4. CTC recognition (48 px high lines, batched by aspect ratio) with the character
   set stored in the rec model's ONNX metadata; greedy CTC decode.

Lines are returned in reading order (rows top to bottom, left to right in a row),
with the mean per-character probability as score and an axis-aligned box in input
pixels. Each request carries one image (max_batch_size 0); Triton may still hand
`execute` a list of requests, which are processed one after another.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton (benchmarks, parity checks)
    pb_utils = None

HERE = os.path.dirname(os.path.abspath(__file__))

DEFAULTS = {
    "intra_op_threads": "0",
    "det_limit_side_len": "960",
    "det_limit_type": "max",
    "max_side_len": "2000",
    "det_thresh": "0.3",
    "det_box_thresh": "0.5",
    "det_unclip_ratio": "1.6",
    "use_cls": "true",
    "text_score": "0.5",
}
MIN_SIDE_LEN = 30  # rapidocr Global.min_side_len
PAD_MIN_HEIGHT = 30  # rapidocr Global.min_height
PAD_WIDTH_HEIGHT_RATIO = 8  # rapidocr Global.width_height_ratio
MAX_CANDIDATES = 1000
MIN_BOX_SIDE = 3
REC_HEIGHT, REC_MIN_WIDTH, REC_BATCH = 48, 320, 6
CLS_HEIGHT, CLS_WIDTH, CLS_BATCH, CLS_THRESH = 48, 192, 6, 0.9


@dataclass
class OcrLine:
    text: str
    score: float
    box: tuple[int, int, int, int]  # x, y, width, height in input pixels


def _resize_to_32(img: np.ndarray, ratio: float) -> np.ndarray | None:
    h, w = img.shape[:2]
    resize_h = int(round(int(h * ratio) / 32) * 32)
    resize_w = int(round(int(w * ratio) / 32) * 32)
    if resize_h <= 0 or resize_w <= 0:
        return None
    return cv2.resize(img, (resize_w, resize_h))


def _ordered_min_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Min-area rectangle of a point set as 4 corners (tl, tr, br, bl) and its short side."""
    rect = cv2.minAreaRect(points.reshape(-1, 2).astype(np.float32))
    return _rect_corners(rect), min(rect[1])


def _rect_corners(rect: Any) -> np.ndarray:
    pts = sorted(cv2.boxPoints(rect).tolist(), key=lambda p: p[0])
    left = sorted(pts[:2], key=lambda p: p[1])
    right = sorted(pts[2:], key=lambda p: p[1])
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def _box_score_fast(prob: np.ndarray, box: np.ndarray) -> float:
    h, w = prob.shape
    xmin = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    xmax = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    ymin = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    ymax = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    shifted = box - np.array([xmin, ymin], dtype=np.float32)
    cv2.fillPoly(mask, shifted.reshape(1, -1, 2).astype(np.int32), 1)
    return float(cv2.mean(prob[ymin : ymax + 1, xmin : xmax + 1], mask)[0])


def _crop_line(img: np.ndarray, quad: np.ndarray) -> np.ndarray:
    width = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
    height = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    crop = cv2.warpPerspective(
        img, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if crop.shape[0] / max(crop.shape[1], 1) >= 1.5:  # vertical line: read it rotated
        crop = np.rot90(crop)
    return crop


def _normalize_line(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to `height` keeping the aspect ratio (at most `width`), scale to [-1, 1], pad right."""
    h, w = img.shape[:2]
    resized_w = min(width, math.ceil(height * w / float(h)))
    resized = cv2.resize(img, (resized_w, height)).astype(np.float32)
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :resized_w] = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    return out


def reading_order(quads: list[np.ndarray]) -> list[int]:
    """Indices of text quads (4x2, tl/tr/br/bl) in reading order: rows top to bottom,
    left to right within a row.

    Positions are measured along the dominant text direction (the median line angle),
    so slightly rotated pages keep their line order. A quad joins the current row when
    its centre lies within half a line height of the row's centre across the text
    direction; line heights come from the quads, so this works at any image scale."""
    if not quads:
        return []
    q = np.stack(quads).astype(np.float64)
    edge = (q[:, 1] - q[:, 0]) + (q[:, 2] - q[:, 3])
    angle = float(np.median(np.arctan2(edge[:, 1], edge[:, 0])))
    if abs(angle) > math.pi / 4:  # vertical or odd layouts: plain top-to-bottom
        angle = 0.0
    along_dir = np.array([math.cos(angle), math.sin(angle)])
    across_dir = np.array([-math.sin(angle), math.cos(angle)])
    across = q.mean(axis=1) @ across_dir
    start = (q @ along_dir).min(axis=1)
    heights = (np.linalg.norm(q[:, 3] - q[:, 0], axis=1) + np.linalg.norm(q[:, 2] - q[:, 1], axis=1)) / 2
    rows: list[list[int]] = []
    row_centre = row_height = 0.0
    for i in np.argsort(across, kind="stable").tolist():
        if rows and abs(across[i] - row_centre) <= 0.5 * max(min(heights[i], row_height), 1.0):
            rows[-1].append(i)
            n = len(rows[-1])
            row_centre += (across[i] - row_centre) / n
            row_height += (heights[i] - row_height) / n
        else:
            rows.append([i])
            row_centre, row_height = float(across[i]), float(heights[i])
    return [i for row in rows for i in sorted(row, key=lambda j: start[j])]


class OcrPipeline:
    def __init__(self, model_dir: str, params: dict[str, str]) -> None:
        p = {**DEFAULTS, **params}
        self.det_limit_side_len = int(p["det_limit_side_len"])
        self.det_limit_type = p["det_limit_type"].strip().lower()
        if self.det_limit_type not in ("min", "max"):
            raise ValueError(f"det_limit_type must be min or max, not {self.det_limit_type!r}")
        self.max_side_len = int(p["max_side_len"])
        self.det_thresh = float(p["det_thresh"])
        self.det_box_thresh = float(p["det_box_thresh"])
        self.unclip_ratio = float(p["det_unclip_ratio"])
        self.use_cls = p["use_cls"].strip().lower() in ("1", "true", "yes")
        self.text_score = float(p["text_score"])

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(p["intra_op_threads"])
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # det inputs vary in size; rapidocr does the same
        options.enable_mem_pattern = False  # patterns are cached per input shape: every image is new

        def session(name: str) -> ort.InferenceSession:
            path = os.path.join(model_dir, name)
            return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        self.det = session("det.onnx")
        self.cls = session("cls.onnx") if self.use_cls else None
        self.rec = session("rec.onnx")
        meta = self.rec.get_modelmeta().custom_metadata_map
        # CTC classes: 0 is the blank, then the dictionary, then a space (PaddleOCR's use_space_char).
        self.charset = ["", *meta["character"].splitlines(), " "]
        n_classes = self.rec.get_outputs()[0].shape[-1]
        if isinstance(n_classes, int) and n_classes != len(self.charset):
            raise ValueError(f"rec model has {n_classes} classes, charset {len(self.charset)}")

    # -- detection ------------------------------------------------------------------------
    def _det_input(self, img: np.ndarray) -> np.ndarray | None:
        h, w = img.shape[:2]
        limit = self.det_limit_side_len
        if self.det_limit_type == "max":
            ratio = limit / max(h, w) if max(h, w) > limit else 1.0
        else:
            ratio = limit / min(h, w) if min(h, w) < limit else 1.0
        resized = _resize_to_32(img, ratio)
        if resized is None:
            return None
        x = (resized.astype(np.float32) / 255.0 - 0.5) / 0.5
        return x.transpose(2, 0, 1)[None]

    def detect(self, img: np.ndarray) -> list[np.ndarray]:
        """Text quads (4x2 float32, tl/tr/br/bl) in `img` pixels."""
        x = self._det_input(img)
        if x is None:
            return []
        prob = self.det.run(None, {self.det.get_inputs()[0].name: x})[0][0, 0]
        map_h, map_w = prob.shape
        src_h, src_w = img.shape[:2]
        bitmap = cv2.dilate((prob > self.det_thresh).astype(np.uint8), np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(bitmap * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        quads = []
        for contour in contours[:MAX_CANDIDATES]:
            box, short = _ordered_min_box(contour)
            if short < MIN_BOX_SIDE or _box_score_fast(prob, box) < self.det_box_thresh:
                continue
            rect = cv2.minAreaRect(box)
            (cx, cy), (rw, rh), angle = rect
            distance = rw * rh * self.unclip_ratio / max(2 * (rw + rh), 1e-6)
            grown = ((cx, cy), (rw + 2 * distance, rh + 2 * distance), angle)
            if min(grown[1]) < MIN_BOX_SIDE + 2:
                continue
            quad = _rect_corners(grown)
            quad[:, 0] = np.clip(np.round(quad[:, 0] / map_w * src_w), 0, src_w - 1)
            quad[:, 1] = np.clip(np.round(quad[:, 1] / map_h * src_h), 0, src_h - 1)
            if np.linalg.norm(quad[0] - quad[1]) <= 3 or np.linalg.norm(quad[0] - quad[3]) <= 3:
                continue
            quads.append(quad)
        return quads

    # -- orientation and recognition ------------------------------------------------------
    def upside_down(self, crops: list[np.ndarray]) -> list[int]:
        """Indices of the crops the 0/180 classifier calls upside down."""
        flipped: list[int] = []
        if self.cls is None or not crops:
            return flipped
        order = np.argsort([c.shape[1] / c.shape[0] for c in crops])
        name = self.cls.get_inputs()[0].name
        for start in range(0, len(order), CLS_BATCH):
            idx = order[start : start + CLS_BATCH]
            batch = np.stack([_normalize_line(crops[i], CLS_HEIGHT, CLS_WIDTH) for i in idx])
            probs = self.cls.run(None, {name: batch})[0]
            for i, p in zip(idx, probs, strict=True):
                if int(np.argmax(p)) == 1 and float(p[1]) > CLS_THRESH:
                    flipped.append(int(i))
        return flipped

    def recognize(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        order = np.argsort([c.shape[1] / c.shape[0] for c in crops])
        name = self.rec.get_inputs()[0].name
        for start in range(0, len(order), REC_BATCH):
            idx = order[start : start + REC_BATCH]
            max_ratio = max(REC_MIN_WIDTH / REC_HEIGHT, *(crops[i].shape[1] / crops[i].shape[0] for i in idx))
            width = int(REC_HEIGHT * max_ratio)
            batch = np.stack([_normalize_line(crops[i], REC_HEIGHT, width) for i in idx])
            preds = self.rec.run(None, {name: batch})[0]
            for i, pred in zip(idx, preds, strict=True):
                results[i] = self._ctc_decode(pred)
        return results

    def _ctc_decode(self, pred: np.ndarray) -> tuple[str, float]:
        ids = pred.argmax(axis=1)
        probs = pred.max(axis=1)
        keep = ids != 0
        keep[1:] &= ids[1:] != ids[:-1]
        if not keep.any():
            return "", 0.0
        text = "".join(self.charset[i] for i in ids[keep])
        return text, float(np.clip(probs[keep].mean(), 0.0, 1.0))

    # -- whole image ----------------------------------------------------------------------
    def __call__(self, rgb: np.ndarray) -> list[OcrLine]:
        src_h, src_w = rgb.shape[:2]
        if src_h < 2 or src_w < 2:
            return []
        img = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)  # PP-OCR is trained on BGR
        # Bound the size as rapidocr does: longest side <= max_side_len, then shortest >= 30.
        for limit, too_big in ((self.max_side_len, True), (MIN_SIDE_LEN, False)):
            h, w = img.shape[:2]
            if (max(h, w) > limit) if too_big else (min(h, w) < limit):
                resized = _resize_to_32(img, limit / (max(h, w) if too_big else min(h, w)))
                if resized is None:
                    return []
                img = resized
        scale_x, scale_y = src_w / img.shape[1], src_h / img.shape[0]
        # Very flat images (a single line) get black bands above and below, as in rapidocr.
        h, w = img.shape[:2]
        top = 0
        if h <= PAD_MIN_HEIGHT or w / h > PAD_WIDTH_HEIGHT_RATIO:
            new_h = max(int(w / PAD_WIDTH_HEIGHT_RATIO), PAD_MIN_HEIGHT) * 2
            top = int(abs(new_h - h) / 2)
            img = cv2.copyMakeBorder(img, top, top, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))

        quads = self.detect(img)
        if not quads:
            return []
        crops = [_crop_line(img, q) for q in quads]
        texts = self.recognize(crops)
        # The classifier alone flips some upright lines (seen on wide serif lines), so a line
        # it calls upside down is read both ways and the more confident reading is kept.
        flipped = self.upside_down(crops)
        if flipped:
            turned = self.recognize([cv2.rotate(crops[i], cv2.ROTATE_180) for i in flipped])
            for i, reading in zip(flipped, turned, strict=True):
                if reading[1] > texts[i][1]:
                    texts[i] = reading

        lines: list[OcrLine] = []
        kept: list[np.ndarray] = []
        for quad, (text, score) in zip(quads, texts, strict=True):
            if not text.strip() or score < self.text_score:
                continue
            xs = np.clip(quad[:, 0] * scale_x, 0, src_w)
            ys = np.clip((quad[:, 1] - top) * scale_y, 0, src_h)
            kept.append(np.stack([xs, ys], axis=1))
            x0, y0 = int(np.floor(xs.min())), int(np.floor(ys.min()))
            x1, y1 = int(np.ceil(xs.max())), int(np.ceil(ys.max()))
            x0, y0 = min(x0, src_w - 1), min(y0, src_h - 1)
            box = (x0, y0, max(1, min(x1, src_w) - x0), max(1, min(y1, src_h) - y0))
            lines.append(OcrLine(text.strip(), score, box))
        return [lines[i] for i in reading_order(kept)]


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.pipeline = OcrPipeline(version_dir, params)
        # Without an arena, ONNX Runtime's buffers of every size come from glibc's heap, which
        # keeps the peak after they are freed (137 -> 280 MB over 300 images); trimming after
        # each execute gives the pages back.
        try:
            self.malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            self.malloc_trim = None

    def _respond(self, request: Any) -> Any:
        image = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
        if image.ndim != 3 or image.shape[2] != 3:
            raise pb_utils.TritonModelException(f"IMAGE must be [height, width, 3] uint8, got {image.shape}")
        lines = self.pipeline(image)
        texts = np.array([line.text.encode("utf-8") for line in lines], dtype=np.object_)
        joined = np.array(["\n".join(line.text for line in lines).encode("utf-8")], dtype=np.object_)
        scores = np.array([line.score for line in lines], dtype=np.float32)
        boxes = np.array([line.box for line in lines], dtype=np.int32).reshape(-1, 4)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("TEXT", joined),
                pb_utils.Tensor("LINES", texts.reshape(-1)),
                pb_utils.Tensor("SCORES", scores),
                pb_utils.Tensor("BOXES", boxes),
            ]
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._respond(request))
            except Exception as exc:  # one bad image must not fail the others
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        if self.malloc_trim is not None:
            self.malloc_trim(0)
        return responses

    def finalize(self) -> None:
        self.pipeline = None
