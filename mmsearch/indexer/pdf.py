"""A PDF as pages: text (with line boxes), figures, ruled tables, page renders (pypdfium2).

This runs inside a worker process (mmsearch/indexer/pdfworker.py), never in the indexer:
PDFium is C++ parsing hostile bytes (a crash, a hang or a decompression bomb must cost one
process, not the partition), it is not thread-safe, and it holds no GIL we could share.
Limits are checked before the work they bound: bytes and page count before any page is
loaded; every image object's declared pixel size before its page is rendered (a 60,000 x
60,000 image is refused, never decoded); render size by choosing the scale. Time and memory
are bounded by the parent (timeout, RLIMIT_AS).

Coordinates: PDF points, origin at the top left of the page (y down), as the API's citations.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

Reason = Literal["corrupt", "encrypted", "over_limit", "bomb"]
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 (points, top-left origin)

# A page with fewer extractable characters than this and an image on it is a scan: it is OCRed.
SCANNED_MAX_CHARS = 16
# Figures smaller than this (points, either side) are icons, bullets, logos: not indexed.
MIN_FIGURE_SIDE = 48.0
# Ruled tables: lines thinner than this are rules; a table has at least this many horizontal rules.
RULE_THICKNESS = 2.5
MIN_TABLE_RULES = 3
# Rules further apart than this (points) start a new table.
MAX_RULE_GAP = 72.0
# A caption is read from this band under a figure (points).
CAPTION_BAND = 36.0
PREVIEW_SIDE = 768
PREVIEW_QUALITY = 75


@dataclass(frozen=True)
class DocLimits:
    max_bytes: int = 32 << 20
    max_pages: int = 300
    # A page is rendered at the largest scale (at most 2x) keeping both of these.
    max_render_side: int = 1600
    max_render_pixels: int = 2_000_000
    # Declared size of one embedded image; larger is refused as a decompression bomb.
    max_image_pixels: int = 40_000_000
    max_figures_per_page: int = 8


class DocumentRejected(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason: Reason = reason
        self.detail = detail


@dataclass
class Region:
    """A visual child: a figure, a table or the whole page."""

    kind: Literal["figure", "table", "page"]
    bbox: Box
    text: str  # a table's text, a figure's caption; empty for a page (its text is in the passages)
    jpeg: bytes  # the region cropped from the page render, at most PREVIEW_SIDE a side


@dataclass
class Line:
    """One line of a page's text: text[start:end] is on it, inside bbox."""

    start: int
    end: int
    bbox: Box


@dataclass
class ParsedPage:
    number: int  # 1-based
    width: float
    height: float
    text: str
    lines: list[Line] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    # No text layer but something drawn: the page render for OCR, and its scale (pixels per point).
    scan_png: bytes = b""
    scan_scale: float = 0.0


@dataclass
class ParsedDocument:
    pages: list[ParsedPage]
    title: str = ""


def _jpeg(image: Image.Image, side: int = PREVIEW_SIDE) -> bytes:
    image = image.convert("RGB")
    # BOX: a plain area average, ~10x faster than LANCZOS on page renders and as sharp at 2:1.
    image.thumbnail((side, side), Image.Resampling.BOX)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=PREVIEW_QUALITY)
    return out.getvalue()


def _flip(bounds: tuple[float, float, float, float], height: float) -> Box:
    """PDFium (left, bottom, right, top), y up -> (x0, y0, x1, y1), y down."""
    left, bottom, right, top = bounds
    return (round(left, 2), round(height - top, 2), round(right, 2), round(height - bottom, 2))


def _union(boxes: Sequence[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def open_document(data: bytes, limits: DocLimits) -> pdfium.PdfDocument:
    if len(data) > limits.max_bytes:
        raise DocumentRejected(
            "over_limit", f"document is {len(data)} bytes, over the limit {limits.max_bytes}"
        )
    if not data.startswith(b"%PDF-") and b"%PDF-" not in data[:1024]:
        raise DocumentRejected("corrupt", "not a PDF (no %PDF- header)")
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if pdfium_c.FPDF_GetLastError() == pdfium_c.FPDF_ERR_PASSWORD:
            raise DocumentRejected("encrypted", "the PDF is encrypted with a user password") from exc
        raise DocumentRejected("corrupt", f"PDFium cannot open it: {exc}") from exc
    pages = len(pdf)
    if pages == 0:
        raise DocumentRejected("corrupt", "the PDF has no pages")
    if pages > limits.max_pages:
        raise DocumentRejected("over_limit", f"document has {pages} pages, over the limit {limits.max_pages}")
    return pdf


def _lines(textpage: pdfium.PdfTextPage, text: str, height: float) -> list[Line]:
    """The text's lines with their boxes (offsets into `text`); empty when PDFium's text and its
    character indices disagree (then citations fall back to the page). A line's box is the
    union of its first and last visible characters' boxes (two lookups per line, not one per
    character: that was most of the parse time of a 300-page manual)."""
    if textpage.count_chars() != len(text):
        return []
    lines: list[Line] = []
    start = 0
    for end in [*(i for i, c in enumerate(text) if c == "\n"), len(text)]:
        line = text[start:end].rstrip("\r")
        visible = [start + i for i, c in enumerate(line) if not c.isspace()]
        boxes = []
        for i in {visible[0], visible[-1]} if visible else ():
            left, bottom, right, top = textpage.get_charbox(i)
            if right > left and top > bottom:
                boxes.append(_flip((left, bottom, right, top), height))
        if boxes:
            lines.append(Line(start, start + len(line), _union(boxes)))
        start = end + 1
    return lines


def _tables(page: pdfium.PdfPage, height: float) -> list[Box]:
    """Ruled tables: runs of at least MIN_TABLE_RULES horizontal rules that overlap horizontally
    and are at most MAX_RULE_GAP apart, widened by the vertical rules that touch them."""
    horizontal: list[Box] = []
    vertical: list[Box] = []
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_PATH], max_depth=4):
        x0, y0, x1, y1 = _flip(obj.get_bounds(), height)
        if y1 - y0 <= RULE_THICKNESS and x1 - x0 >= 24:
            horizontal.append((x0, y0, x1, y1))
        elif x1 - x0 <= RULE_THICKNESS and y1 - y0 >= 8:
            vertical.append((x0, y0, x1, y1))
    horizontal.sort(key=lambda b: b[1])
    groups: list[list[Box]] = []
    for rule in horizontal:
        last = groups[-1][-1] if groups else None
        if last is not None and rule[1] - last[3] <= MAX_RULE_GAP and rule[0] < last[2] and rule[2] > last[0]:
            groups[-1].append(rule)
        else:
            groups.append([rule])
    tables = []
    for rules in groups:
        if len(rules) < MIN_TABLE_RULES:
            continue
        box = _union(rules)
        touching = [v for v in vertical if v[1] >= box[1] - 2 and v[3] <= box[3] + 2]
        tables.append(_union([box, *touching]))
    return tables


def _figures(page: pdfium.PdfPage, height: float, limits: DocLimits, number: int) -> list[Box]:
    figures: list[Box] = []
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=4):
        assert isinstance(obj, pdfium.PdfImage)
        width_px, height_px = obj.get_px_size()
        if width_px * height_px > limits.max_image_pixels:
            raise DocumentRejected(
                "bomb",
                f"page {number}: an image declares {width_px} x {height_px} pixels, "
                f"over the limit {limits.max_image_pixels}",
            )
        box = _flip(obj.get_bounds(), height)
        if box[2] - box[0] >= MIN_FIGURE_SIDE and box[3] - box[1] >= MIN_FIGURE_SIDE:
            figures.append(box)
    return figures[: limits.max_figures_per_page]


def _scale(width: float, height: float, limits: DocLimits) -> float:
    by_side = limits.max_render_side / max(width, height, 1.0)
    by_pixels = math.sqrt(limits.max_render_pixels / max(width * height, 1.0))
    return max(min(by_side, by_pixels, 2.0), 0.01)


def _crop(render: Image.Image, box: Box, scale: float) -> Image.Image:
    x0, y0, x1, y1 = (max(0, round(v * scale)) for v in box)
    return render.crop((x0, y0, min(x1, render.width), min(y1, render.height)))


def _bounded_text(textpage: pdfium.PdfTextPage, box: Box, height: float) -> str:
    x0, y0, x1, y1 = box
    return str(textpage.get_text_bounded(left=x0, bottom=height - y1, right=x1, top=height - y0)).strip()


def parse_page(pdf: pdfium.PdfDocument, index: int, limits: DocLimits) -> ParsedPage:
    page = pdf[index]
    number = index + 1
    try:
        width, height = page.get_size()
        # Bomb check first: the render below decodes every image on the page.
        figures = _figures(page, height, limits, number)
        textpage = page.get_textpage()
        text = textpage.get_text_range().replace("\x00", "")
        parsed = ParsedPage(number, round(width, 2), round(height, 2), text, _lines(textpage, text, height))
        scale = _scale(width, height, limits)
        render = page.render(scale=scale, may_draw_forms=False).to_pil()
        tables = _tables(page, height)
        for box in tables:
            parsed.regions.append(
                Region("table", box, _bounded_text(textpage, box, height), _jpeg(_crop(render, box, scale)))
            )
        for box in figures:
            band = (box[0], box[3], box[2], min(height, box[3] + CAPTION_BAND))
            caption = _bounded_text(textpage, band, height)
            parsed.regions.append(Region("figure", box, caption, _jpeg(_crop(render, box, scale))))
        parsed.regions.append(Region("page", (0.0, 0.0, parsed.width, parsed.height), "", _jpeg(render)))
        if len(text.strip()) < SCANNED_MAX_CHARS and figures:
            # A scan: the page image is the figure; its text comes from OCR.
            area = parsed.width * parsed.height
            parsed.regions = [
                r
                for r in parsed.regions
                if r.kind == "page" or (r.bbox[2] - r.bbox[0]) * (r.bbox[3] - r.bbox[1]) < 0.8 * area
            ]
            out = io.BytesIO()
            render.convert("L").save(out, format="PNG")
            parsed.scan_png, parsed.scan_scale = out.getvalue(), scale
        textpage.close()
        return parsed
    finally:
        page.close()


def parse(data: bytes, limits: DocLimits) -> ParsedDocument:
    pdf = open_document(data, limits)
    try:
        title = str(pdf.get_metadata_value("Title") or "").strip()
        return ParsedDocument([parse_page(pdf, i, limits) for i in range(len(pdf))], title[:512])
    finally:
        pdf.close()


# JSON between the worker and the indexer (no pickle: the worker reads hostile bytes).


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def to_json(document: ParsedDocument) -> dict[str, Any]:
    pages = []
    for page in document.pages:
        item = asdict(page)
        item["scan_png"] = _b64(page.scan_png)
        item["regions"] = [{**asdict(r), "jpeg": _b64(r.jpeg)} for r in page.regions]
        pages.append(item)
    return {"title": document.title, "pages": pages}


def _box(value: Sequence[float]) -> Box:
    x0, y0, x1, y1 = (float(v) for v in value)
    return (x0, y0, x1, y1)


def from_json(data: dict[str, Any]) -> ParsedDocument:
    pages = []
    for item in data["pages"]:
        pages.append(
            ParsedPage(
                number=int(item["number"]),
                width=float(item["width"]),
                height=float(item["height"]),
                text=str(item["text"]),
                lines=[Line(int(x["start"]), int(x["end"]), _box(x["bbox"])) for x in item["lines"]],
                regions=[
                    Region(r["kind"], _box(r["bbox"]), str(r["text"]), base64.b64decode(r["jpeg"]))
                    for r in item["regions"]
                ],
                scan_png=base64.b64decode(item["scan_png"]),
                scan_scale=float(item["scan_scale"]),
            )
        )
    return ParsedDocument(pages, str(data.get("title", "")))
