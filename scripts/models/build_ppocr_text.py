#!/usr/bin/env python3
"""Build model_repository/ppocr_text/1/: the PP-OCR ONNX models (text detection,
text-line orientation, text recognition) from the hash-pinned rapidocr wheel.

Only the three .onnx files are taken. The recognizer's character set is stored
in the rec model's ONNX metadata (key "character"), so no dictionary file is
needed, and the pre/post-processing lives in ppocr_text/1/model.py (numpy +
OpenCV + ONNX Runtime), so none of rapidocr's code or dependencies is used.
Idempotent: a file already present with the pinned sha256 is left alone.
"""

from __future__ import annotations

from wheels import REPO, extract_checked, wheel, write_sources

MODEL_DIR = REPO / "ppocr_text" / "1"
WHEEL_PREFIX = "rapidocr-3.10.0-"

# (member in the wheel, file name in the model folder, sha256). The sums are the
# ones rapidocr publishes for these files in rapidocr/default_models.yaml.
FILES = (
    (
        "rapidocr/models/PP-OCRv6_det_small.onnx",
        "det.onnx",
        "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
    ),
    (
        "rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx",
        "cls.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    ),
    (
        "rapidocr/models/PP-OCRv6_rec_small.onnx",
        "rec.onnx",
        "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
    ),
)


def main() -> None:
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    source = wheel(WHEEL_PREFIX)
    entries = []
    for member, name, pinned in FILES:
        extract_checked(source, member, MODEL_DIR / name, pinned)
        entries.append({"file": name, "from": f"{source.name}:{member}", "sha256": pinned})
        print(f"ppocr_text/1/{name}  ok")
    write_sources(MODEL_DIR, entries)


if __name__ == "__main__":
    main()
