#!/usr/bin/env python3
"""OCR accuracy and latency of the `ppocr_text` Triton model on rendered text.

    .venv/bin/python bench/ocr_accuracy.py [--json PATH] [--triton-url HOST:PORT] [--seed 2026]

Renders a reproducible (seeded) set of 72 text images with Pillow: single words,
sentences, identifiers / numbers, multi-line paragraphs, light-on-dark, slightly
rotated, JPEG-compressed, on a noisy background, and "hard" (9-11 px, low contrast,
blurred, rotated, noisy and JPEG at once), in several sizes, with Pillow's
bundled font (`ImageFont.load_default(size=N)`) and the DejaVu fonts when
/usr/share/fonts has them. Sends each image to the model (one request per image,
sequentially) and reports, overall and per category:

- CER: Levenshtein distance between the model's TEXT and the reference lines joined
  with "\\n", summed over images and divided by the summed reference length;
- word accuracy: share of reference words (whitespace tokens, case-sensitive) that
  the model returned (multiset intersection);
- exact-line match: share of reference lines returned exactly as one LINE;
- latency p50 / p99 of one request (client-side wall time).

Starts its own tritonserver (from .venv-triton) on free loopback ports loading only
ppocr_text (mmsearch.dev.harness.running_stack), unless --triton-url is given.
The images are rendered with Pillow; if this interpreter has no Pillow (the services'
venv has none), they are rendered by .venv-build/bin/python in a subprocess.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = "ppocr_text"
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts"))
DEJAVU = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf")

WORDS = (  # noqa: SIM905 - a readable vocabulary
    "invoice receipt total amount payment account customer delivery address station "
    "mountain river window garden coffee market history science holiday weather "
    "Berlin London Tokyo Monday Friday January October Museum Library Airport"
).split()
SENTENCES = (
    "The quick brown fox jumps over the lazy dog",
    "Please keep this receipt for your records",
    "Meeting moved to Thursday at the main office",
    "Fresh bread and coffee served every morning",
    "Emergency exit only, do not block the door",
    "All trains to the airport depart from platform four",
    "Thank you for shopping with us today",
    "Turn left at the second traffic light",
    "Annual report of the research department",
    "Visitors must register at the front desk",
    "Store in a cool and dry place",
    "The library closes early on public holidays",
)
PARAGRAPH_LINES = (
    "Dear customer, your order has shipped.",
    "It will arrive within three working days.",
    "Track the parcel with the number below.",
    "Questions? Call our service team.",
    "Opening hours are nine to five.",
    "Bring a valid photo ID with you.",
    "Seats are limited, book early.",
    "The museum is free on Sundays.",
    "Lunch is served in the main hall.",
    "Remember to switch off the lights.",
)
CATEGORIES = ("word", "sentence", "identifier", "paragraph", "inverted", "rotated", "jpeg", "noisy", "hard")
PER_CATEGORY = 8


@dataclass
class Sample:
    id: str
    category: str
    lines: list[str]
    image: np.ndarray  # HxWx3 uint8 RGB


# -- rendering (needs Pillow) ---------------------------------------------------------------
def _fonts(size: int) -> list:
    from PIL import ImageFont

    fonts = [ImageFont.load_default(size=size)]
    for name in DEJAVU:
        for folder in FONT_DIRS:
            path = folder / name
            if path.exists():
                fonts.append(ImageFont.truetype(str(path), size))
                break
    return fonts


def _identifier(rng: np.random.Generator) -> str:
    kind = int(rng.integers(0, 5))
    if kind == 0:
        return f"INV-{rng.integers(2019, 2027)}-{rng.integers(0, 100000):05d}"
    if kind == 1:
        return f"Order #{rng.integers(100000, 999999)}"
    if kind == 2:
        return f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/{rng.integers(1990, 2030)}"
    if kind == 3:
        return f"Total: {rng.integers(1, 9999)}.{rng.integers(0, 100):02d} EUR"
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    return "".join(letters[i] for i in rng.integers(0, len(letters), 3)) + f"{rng.integers(100, 9999)}"


def _render(lines: list[str], font, fg: tuple, bg: tuple, rng: np.random.Generator, *, noisy: bool):
    from PIL import Image, ImageDraw

    size = font.size
    spacing = int(size * 0.5)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [probe.textbbox((0, 0), line, font=font)[2] for line in lines]
    margin = int(size * rng.uniform(0.6, 1.6))
    width = max(widths) + 2 * margin
    height = len(lines) * size + (len(lines) - 1) * spacing + 2 * margin + size // 3
    image = Image.new("RGB", (width, height), bg)
    if noisy:
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.array(bg, dtype=np.float32)
        grad = (xx / width * 40 - 20)[..., None] + (yy / height * 30 - 15)[..., None]
        noise = rng.normal(0, 14, (height, width, 3))
        image = Image.fromarray(np.clip(base + grad + noise, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(12):  # faint shapes behind the text
            x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
            r = int(rng.integers(size // 2, size * 3))
            tint = tuple(int(c) for c in np.clip(np.array(bg) - rng.integers(20, 60), 0, 255))
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), outline=tint, width=2)
    draw = ImageDraw.Draw(image)
    y = margin
    for line in lines:
        draw.text((margin, y), line, font=font, fill=fg)
        y += size + spacing
    return image


def _content(category: str, k: int, rng: np.random.Generator) -> list[str]:
    kinds = ("word", "sentence", "identifier", "paragraph")
    kind = category if category in kinds else kinds[k % 4]  # style categories mix the contents
    if kind == "word":
        return [str(rng.choice(WORDS))]
    if kind == "sentence":
        return [str(rng.choice(SENTENCES))]
    if kind == "identifier":
        return [_identifier(rng)]
    n = int(rng.integers(2, 6))
    return [str(s) for s in rng.choice(PARAGRAPH_LINES, size=n, replace=False)]


def render_samples(seed: int) -> list[Sample]:
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    samples = []
    for category in CATEGORIES:
        for k in range(PER_CATEGORY):
            size = int(rng.choice([11, 13, 16, 20, 26, 34, 48]))
            if category == "hard":
                size = int(rng.choice([9, 10, 11]))
            fonts = _fonts(size)
            font = fonts[int(rng.integers(0, len(fonts)))]
            fg, bg = (20, 20, 20), (250, 250, 245)
            lines = _content(category, k, rng)
            if category == "inverted":
                fg, bg = (240, 240, 240), (int(rng.integers(10, 60)), int(rng.integers(10, 60)), 90)
            if category == "hard":  # tiny, low-contrast, blurred, rotated, noisy and JPEG'd at once
                fg, bg = (95, 95, 100), (175, 170, 160)
            image = _render(lines, font, fg, bg, rng, noisy=category in ("noisy", "hard"))
            if category == "hard":
                image = image.filter(ImageFilter.GaussianBlur(0.7))
            if category in ("rotated", "hard"):
                angle = float(rng.uniform(2, 7)) * (1 if rng.random() < 0.5 else -1)
                image = image.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=bg)
            if category in ("jpeg", "hard"):
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=int(rng.integers(15, 40)))
                image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
            samples.append(Sample(f"{category}-{k}", category, lines, np.asarray(image, dtype=np.uint8)))
    return samples


def load_samples(seed: int) -> list[Sample]:
    """Render in this interpreter if it has Pillow, else in .venv-build's."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        pass
    else:
        return render_samples(seed)
    python = ROOT / ".venv-build" / "bin" / "python"
    if not python.exists():
        raise SystemExit("Pillow is needed to render the images: run `make models` (creates .venv-build)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "samples.npz"
        cmd = [str(python), __file__, "--render-to", str(out), "--seed", str(seed)]
        subprocess.run(cmd, check=True)
        return _read_npz(out)


def _write_npz(samples: list[Sample], path: Path) -> None:
    meta = [{"id": s.id, "category": s.category, "lines": s.lines} for s in samples]
    arrays = {f"img{i}": s.image for i, s in enumerate(samples)}
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def _read_npz(path: Path) -> list[Sample]:
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        return [Sample(m["id"], m["category"], m["lines"], data[f"img{i}"]) for i, m in enumerate(meta)]


# -- metrics --------------------------------------------------------------------------------
def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def score_one(ref_lines: list[str], text: str, lines: list[str]) -> dict[str, float]:
    reference = "\n".join(ref_lines)
    ref_words = Counter(w for line in ref_lines for w in line.split())
    got_words = Counter(w for line in lines for w in line.split())
    got_lines = Counter(" ".join(line.split()) for line in lines)
    return {
        "edits": levenshtein(reference, text),
        "ref_chars": len(reference),
        "words_ok": sum((ref_words & got_words).values()),
        "ref_words": sum(ref_words.values()),
        "lines_ok": sum((Counter(ref_lines) & got_lines).values()),
        "ref_lines": len(ref_lines),
    }


def summarize(rows: list[dict]) -> dict[str, float]:
    lat = np.array([r["latency_ms"] for r in rows])
    return {
        "images": len(rows),
        "cer": sum(r["edits"] for r in rows) / max(1, sum(r["ref_chars"] for r in rows)),
        "word_accuracy": sum(r["words_ok"] for r in rows) / max(1, sum(r["ref_words"] for r in rows)),
        "exact_line_match": sum(r["lines_ok"] for r in rows) / max(1, sum(r["ref_lines"] for r in rows)),
        "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p99_ms": float(np.percentile(lat, 99)),
    }


# -- Triton ---------------------------------------------------------------------------------
def infer(client, image: np.ndarray) -> tuple[str, list[str]]:
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput("IMAGE", list(image.shape), "UINT8")
    tensor.set_data_from_numpy(np.ascontiguousarray(image))
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("TEXT", "LINES", "SCORES", "BOXES")]
    result = client.infer(MODEL, [tensor], outputs=outputs, client_timeout=120)
    text = result.as_numpy("TEXT").reshape(-1)[0].decode("utf-8")
    lines = [v.decode("utf-8") for v in result.as_numpy("LINES").reshape(-1)]
    return text, lines


def run(samples: list[Sample], url: str, warmup: int = 2) -> list[dict]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    if not client.is_model_ready(MODEL):
        raise SystemExit(f"model {MODEL} is not ready on {url}")
    for sample in samples[:warmup]:
        infer(client, sample.image)
    rows = []
    for sample in samples:
        start = time.perf_counter()
        text, lines = infer(client, sample.image)
        latency = (time.perf_counter() - start) * 1000
        row = {"id": sample.id, "category": sample.category, "shape": list(sample.image.shape[:2])}
        row.update(score_one(sample.lines, text, lines))
        row.update({"latency_ms": latency, "reference": sample.lines, "got": lines})
        rows.append(row)
    client.close()
    return rows


def markdown(summary: dict, per_category: dict) -> str:
    head = (
        "| Set | Images | CER | Word acc. | Exact lines | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for name, s in [*per_category.items(), ("**all**", summary)]:
        rows.append(
            f"| {name} | {s['images']} | {s['cer']:.3f} | {s['word_accuracy']:.3f} | "
            f"{s['exact_line_match']:.3f} | {s['latency_p50_ms']:.0f} | {s['latency_p99_ms']:.0f} |"
        )
    return head + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--triton-url", help="reuse a running Triton (gRPC host:port) instead of starting one"
    )
    parser.add_argument("--json", type=Path, help="write the numbers (and every image's result) here")
    parser.add_argument("--show-errors", action="store_true", help="print every image read with errors")
    parser.add_argument("--render-to", type=Path, help=argparse.SUPPRESS)  # internal: render only
    args = parser.parse_args()

    if args.render_to:
        _write_npz(render_samples(args.seed), args.render_to)
        return

    sys.path.insert(0, str(ROOT))
    from mmsearch.dev.harness import running_stack

    samples = load_samples(args.seed)
    if args.triton_url:
        rows = run(samples, args.triton_url)
    else:
        if not (ROOT / "model_repository" / MODEL / "1" / "rec.onnx").exists():
            raise SystemExit("model_repository/ppocr_text is not built: run `make models`")
        work = Path(tempfile.mkdtemp(prefix="mmsearch-ocr-bench-"))
        with running_stack(work, models=(MODEL,), with_broker=False, with_service=False) as stack:
            rows = run(samples, stack.triton_url)

    summary = summarize(rows)
    per_category = {c: summarize([r for r in rows if r["category"] == c]) for c in CATEGORIES}
    print(f"ppocr_text on {len(rows)} rendered images (seed {args.seed}), one request at a time\n")
    print(markdown(summary, per_category))
    if args.show_errors:
        for r in rows:
            if r["edits"]:
                print(f"\n{r['id']} edits={r['edits']}\n  ref: {r['reference']}\n  got: {r['got']}")
    if args.json:
        report = {
            "benchmark": "ocr_accuracy",
            "model": MODEL,
            "seed": args.seed,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "overall": summary,
            "per_category": per_category,
            "images": rows,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
