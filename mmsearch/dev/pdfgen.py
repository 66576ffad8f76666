"""Build real PDFs for tests and the document benchmark: text (Helvetica), raster charts
drawn with Pillow, ruled tables, scanned pages (a page that is only an image of text), and
hostile files (encrypted, decompression bomb, corrupt). Written through PDFium (pypdfium2),
or by hand where PDFium cannot write the construct (encryption, a bomb's declared size)."""

from __future__ import annotations

import ctypes
import io
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image, ImageDraw, ImageFont

PAGE_W, PAGE_H = 612.0, 792.0  # US letter, points
MARGIN = 72.0
FONT_FILE = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(FONT_FILE, size)
    except OSError:
        return ImageFont.load_default(size=size)


def wrap(text: str, width: int = 90) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            if line and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
    return lines


def bar_chart(
    title: str, labels: Sequence[str], values: Sequence[float], size: tuple[int, int] = (900, 560)
) -> Image.Image:
    """A bar chart whose facts (labels, values) are only in its pixels."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.text((30, 15), title, fill="black", font=_font(30))
    top, bottom, left = 80, h - 70, 80
    peak = max(values) or 1.0
    slot = (w - left - 30) / len(values)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    draw.line((left, bottom, w - 20, bottom), fill="black", width=2)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x0 = left + i * slot + slot * 0.15
        x1 = left + (i + 1) * slot - slot * 0.15
        y0 = bottom - (bottom - top) * value / peak
        draw.rectangle((x0, y0, x1, bottom), fill=colors[i % len(colors)])
        draw.text((x0, y0 - 34), f"{value:g}", fill="black", font=_font(26))
        draw.text((x0, bottom + 12), label, fill="black", font=_font(24))
    return image


def table_image(header: Sequence[str], rows: Sequence[Sequence[str]], col_px: int = 260) -> Image.Image:
    """A table as a picture (a screenshot pasted into a report): its cells only in pixels."""
    row_px = 56
    image = Image.new("RGB", (col_px * len(header) + 2, row_px * (len(rows) + 1) + 2), "white")
    draw = ImageDraw.Draw(image)
    font = _font(28)
    for r, row in enumerate([header, *rows]):
        if r == 0:
            draw.rectangle((0, 0, image.width, row_px), fill="#dddddd")
        for c, cell in enumerate(row):
            draw.text((c * col_px + 12, r * row_px + 12), str(cell), fill="black", font=font)
    for r in range(len(rows) + 2):
        draw.line((0, r * row_px, image.width, r * row_px), fill="black", width=2)
    for c in range(len(header) + 1):
        draw.line((c * col_px, 0, c * col_px, image.height), fill="black", width=2)
    return image


def text_image(lines: Sequence[str], size: tuple[int, int] = (1275, 1650)) -> Image.Image:
    """A 'scanned' page: black text on white, 150 dpi letter."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    font = _font(30)
    for i, line in enumerate(lines):
        draw.text((120, 150 + i * 48), line, fill=0, font=font)
    return image


@dataclass
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    col_width: float = 150.0


@dataclass
class PageSpec:
    paragraphs: list[str] = field(default_factory=list)
    chart: Image.Image | None = None
    caption: str = ""
    table: Table | None = None
    scan: Image.Image | None = None  # the whole page is this image (no text layer)


class _Writer:
    def __init__(self, title: str) -> None:
        self.pdf = pdfium.PdfDocument.new()
        self.title = title
        self.font = pdfium_c.FPDFText_LoadStandardFont(self.pdf.raw, b"Helvetica")

    def text(self, page: pdfium.PdfPage, x: float, y_top: float, text: str, size: float = 11.0) -> None:
        obj = pdfium_c.FPDFPageObj_CreateTextObj(self.pdf.raw, self.font, ctypes.c_float(size))
        encoded = (text + "\0").encode("utf-16-le")
        buffer = ctypes.create_string_buffer(encoded, len(encoded))
        pdfium_c.FPDFText_SetText(obj, ctypes.cast(buffer, ctypes.POINTER(pdfium_c.FPDF_WCHAR)))
        pdfium_c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, x, PAGE_H - y_top - size)
        pdfium_c.FPDFPage_InsertObject(page.raw, obj)

    def rule(self, page: pdfium.PdfPage, x0: float, y0: float, x1: float, y1: float) -> None:
        path = pdfium_c.FPDFPageObj_CreateNewPath(x0, PAGE_H - y0)
        pdfium_c.FPDFPath_LineTo(path, x1, PAGE_H - y1)
        pdfium_c.FPDFPageObj_SetStrokeWidth(path, ctypes.c_float(0.8))
        pdfium_c.FPDFPageObj_SetStrokeColor(path, 0, 0, 0, 255)
        pdfium_c.FPDFPath_SetDrawMode(path, pdfium_c.FPDF_FILLMODE_NONE, True)
        pdfium_c.FPDFPage_InsertObject(page.raw, path)

    def image(
        self,
        page: pdfium.PdfPage,
        image: Image.Image,
        box: tuple[float, float, float, float],
    ) -> None:
        """Draw `image` at box = (x, y from the top, width, height) in points."""
        x, y_top, w, h = box
        obj = pdfium.PdfImage.new(self.pdf)
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=85)
        obj.load_jpeg(io.BytesIO(out.getvalue()), inline=True)
        obj.set_matrix(pdfium.PdfMatrix().scale(w, h).translate(x, PAGE_H - y_top - h))
        page.insert_obj(obj)

    def page(self, spec: PageSpec) -> None:
        page = self.pdf.new_page(PAGE_W, PAGE_H)
        if spec.scan is not None:
            self.image(page, spec.scan, (0, 0, PAGE_W, PAGE_H))
            page.gen_content()
            return
        y = MARGIN
        for paragraph in spec.paragraphs:
            for line in wrap(paragraph):
                self.text(page, MARGIN, y, line)
                y += 14
            y += 8
        if spec.chart is not None:
            w = PAGE_W - 2 * MARGIN
            h = w * spec.chart.height / spec.chart.width
            self.image(page, spec.chart, (MARGIN, y, w, h))
            y += h + 6
            if spec.caption:
                self.text(page, MARGIN, y, spec.caption, size=10)
                y += 24
        if spec.table is not None:
            y = self.table(page, spec.table, y + 10)
        page.gen_content()

    def table(self, page: pdfium.PdfPage, table: Table, y: float) -> float:
        cols = len(table.header)
        x1 = MARGIN + cols * table.col_width
        row_h = 20.0
        rows = [table.header, *table.rows]
        for r, row in enumerate(rows):
            self.rule(page, MARGIN, y + r * row_h, x1, y + r * row_h)
            for c, cell in enumerate(row):
                self.text(page, MARGIN + c * table.col_width + 6, y + r * row_h + 5, str(cell), size=10)
        bottom = y + len(rows) * row_h
        self.rule(page, MARGIN, bottom, x1, bottom)
        for c in range(cols + 1):
            self.rule(page, MARGIN + c * table.col_width, y, MARGIN + c * table.col_width, bottom)
        return bottom + 16

    def save(self) -> bytes:
        out = io.BytesIO()
        self.pdf.save(out)
        self.pdf.close()
        return out.getvalue()


def build_pdf(pages: Sequence[PageSpec], title: str = "") -> bytes:
    writer = _Writer(title)
    for spec in pages:
        writer.page(spec)
    return writer.save()


# Hostile files, written by hand: PDFium writes neither encryption nor lying image headers.


def _raw_pdf(objects: Sequence[bytes], trailer_extra: bytes = b"") -> bytes:
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n"
        % (len(objects) + 1, trailer_extra, xref)
    )
    return out.getvalue()


def _stream(dictionary: bytes, data: bytes) -> bytes:
    return b"<< %s /Length %d >>\nstream\n" % (dictionary, len(data)) + data + b"\nendstream"


def encrypted_pdf() -> bytes:
    """A PDF under the standard security handler whose user password is not empty: PDFium
    refuses it without the password (FPDF_ERR_PASSWORD)."""
    content = _stream(b"", b"BT /F1 12 Tf 72 700 Td (secret) Tj ET")
    o_entry, u_entry, file_id = os.urandom(32), os.urandom(32), os.urandom(16)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        content,
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -44 >>"
        % (o_entry.hex().encode(), u_entry.hex().encode()),
    ]
    trailer = b"/Encrypt 5 0 R /ID [<%s> <%s>] " % (file_id.hex().encode(), file_id.hex().encode())
    return _raw_pdf(objects, trailer)


def bomb_pdf(side: int = 60_000) -> bytes:
    """A page drawing one image that declares side x side RGB pixels (10.8 GB at 60,000) from a
    small Flate stream: a decompression bomb."""
    data = zlib.compress(b"\0" * (4 << 20), 9)
    image = _stream(
        b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
        b"/BitsPerComponent 8 /Filter /FlateDecode" % (side, side),
        data,
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /XObject << /Im1 5 0 R >> >> >>",
        _stream(b"", b"q 468 0 0 600 72 96 cm /Im1 Do Q"),
        image,
    ]
    return _raw_pdf(objects)


def stream_bomb_pdf(inflated_mb: int = 600) -> bytes:
    """A page whose content stream inflates from ~1 MB to `inflated_mb` MB of drawing operators."""
    chunk = b"0 0 m 1 1 l S\n" * 70_000  # ~1 MB
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(chunk) for _ in range(inflated_mb)) + packer.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        _stream(b"/Filter /FlateDecode", body),
    ]
    return _raw_pdf(objects)


def corrupt_pdf(valid: bytes) -> bytes:
    """A PDF header followed by garbage where the body was."""
    return valid[:64] + bytes(reversed(valid[64:4096])) + os.urandom(2048)


SUBJECTS = (
    "The maintenance crew",
    "The regional office",
    "Our logistics partner",
    "The quality team",
    "The night shift",
    "The finance department",
    "The field engineers",
    "The procurement group",
)
ACTIONS = (
    "reviewed the inspection schedule",
    "updated the safety checklist",
    "replaced the worn conveyor belts",
    "audited the supplier invoices",
    "calibrated the pressure sensors",
    "trained new operators on the packaging line",
    "reduced idle time at the loading dock",
    "documented the cooling system repairs",
)


def filler(seed: int, sentences: int = 14) -> str:
    """Plain report prose, different on every page."""
    out = []
    for i in range(sentences):
        n = seed * 31 + i * 7
        out.append(
            f"{SUBJECTS[n % len(SUBJECTS)]} {ACTIONS[(n // 3) % len(ACTIONS)]} in week {(n % 52) + 1}."
        )
    return " ".join(out)


@dataclass(frozen=True)
class Fact:
    """A fact placed on one page: in the text, in a table or only in a chart's pixels."""

    page: int  # 1-based
    where: str  # "text" | "table" | "chart" | "table_image"
    question: str
    answer: str


def report(pages: int, facts: Sequence[Fact], seed: int = 0, title: str = "Plant operations report") -> bytes:
    """A report of `pages` pages of prose, with each fact on its page: a sentence, a ruled table
    row, a bar chart or a pasted table picture (captioned; their numbers only in pixels)."""
    specs = [PageSpec(paragraphs=[filler(seed * 1000 + n)]) for n in range(1, pages + 1)]
    for fact in facts:
        spec = specs[fact.page - 1]
        if fact.where == "text":
            spec.paragraphs.insert(1, fact.answer)
        elif fact.where == "table":
            label, value = fact.answer.split("=", 1)
            spec.table = Table(
                ["Component", "Count"], [["washers", "1200"], [label, value], ["rivets", "860"]]
            )
        elif fact.where == "table_image":
            cells = [part.split("=") for part in fact.answer.split(",")]
            spec.chart = table_image(["Part", "In stock"], cells)
            spec.caption = f"Table {fact.page}: {fact.question}"
        else:
            labels, values = zip(*(part.split("=") for part in fact.answer.split(",")), strict=True)
            spec.chart = bar_chart(fact.question, labels, [float(v) for v in values])
            spec.caption = f"Figure {fact.page}: {fact.question}"
    return build_pdf(specs, title)
