#!/usr/bin/env python3
"""A realistic text corpus for bench/realistic_ingest.py: the Python 3.11 documentation
(Debian `python3.11-doc`, sha256-pinned, downloaded with `apt-get download`, never
installed) split at its section headings into documents of 30-500 words.

    .venv/bin/python bench/realistic_corpus.py   # builds the cache, prints its summary

Each Sphinx `<section>` gives one document: its heading (title "page title — heading")
and its own prose (paragraphs, list items, API signatures and descriptions; code blocks,
navigation and nested sections left out). A section over 500 words is packed, block by
block, into parts of at most 400 words; documents under 30 words are dropped, exact
duplicates removed. About one eligible section in eight is a *query document*: its first
sentence (8-40 words) is held out of the indexed text and becomes a query whose one
relevant document is that section (see `Doc.query`). The corpus is cached as JSONL under
.cache/datasets/realistic/ with its word-length distribution; a rebuild from the same
package gives the same file.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
from fetch_pydoc import DEB_NAME, HTML, PACKAGE, SHA256, VERSION, unpacked_root  # the package's one pin

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "datasets"
CORPUS_VERSION = 1  # bump when the splitting changes

MIN_WORDS, MAX_WORDS, PART_WORDS = 30, 500, 400
QUERY_SHARE = 8  # one eligible section in QUERY_SHARE becomes a query document
QUERY_MIN_WORDS, QUERY_MAX_WORDS = 8, 40
SKIP_PAGES = ("genindex", "py-modindex", "search", "whatsnew/changelog", "license", "bugs")

_VOID = {"br", "img", "hr", "meta", "link", "input", "wbr", "col", "area", "base", "source"}
_BLOCK = {"p", "li", "dt", "dd", "td", "th", "div", "blockquote", "ul", "ol", "dl", "table", "caption"}
_SKIP_TAGS = {"pre", "script", "style", "nav", "header", "footer", "head"}
_SKIP_CLASSES = ("sphinxsidebar", "related", "footer", "highlight", "headerlink", "toctree-wrapper")
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")


@dataclass
class Section:
    heading: str = ""
    anchor: str = ""
    blocks: list[str] = field(default_factory=list)


@dataclass
class Doc:
    id: str
    page: str
    title: str
    text: str  # what is indexed (a query document's first sentence removed)
    words: int
    query: str = ""  # the held-out first sentence, for query documents


class _SectionParser(HTMLParser):
    """Sphinx HTML -> the page's sections in document order, each with its own text blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self._open: list[Section] = []
        self._tags: list[tuple[str, bool, bool]] = []  # (tag, skipping, is a section) of open elements
        self._buf: list[str] = []
        self._heading: list[str] | None = None
        self.page_title = ""

    def _skipping(self) -> bool:
        return any(skip for _, skip, _ in self._tags)

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        self._buf = []
        if text and self._open:
            self._open[-1].blocks.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        attributes = dict(attrs)
        classes = attributes.get("class") or ""
        if tag == "section" or (tag == "div" and "section" in classes.split()):
            self._flush()
            section = Section(anchor=attributes.get("id") or "")
            self._open.append(section)
            self.sections.append(section)
            self._tags.append((tag, False, True))
            return
        skip = tag in _SKIP_TAGS or any(c in classes for c in _SKIP_CLASSES)
        if tag in _HEADINGS and self._open and not self._skipping():
            self._flush()
            self._heading = []
        elif tag in _BLOCK:
            self._flush()
        self._tags.append((tag, skip, False))

    def handle_endtag(self, tag: str) -> None:
        index = next((i for i in range(len(self._tags) - 1, -1, -1) if self._tags[i][0] == tag), None)
        if index is None:
            return
        closed, self._tags = self._tags[index:], self._tags[:index]
        if tag in _HEADINGS and self._heading is not None:
            heading = " ".join("".join(self._heading).split())
            if self._open and not self._open[-1].heading:
                self._open[-1].heading = heading
            if tag == "h1" and not self.page_title:
                self.page_title = heading
            self._heading = None
        elif tag in _BLOCK or any(is_section for _, _, is_section in closed):
            self._flush()
        for _ in range(sum(1 for _, _, is_section in closed if is_section)):
            if self._open:
                self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._skipping():
            return
        if self._heading is not None:
            self._heading.append(data)
        else:
            self._buf.append(data)


def parse_sections(html: str) -> tuple[str, list[Section]]:
    """(page title, sections with a heading and at least one block)."""
    parser = _SectionParser()
    parser.feed(html)
    parser.close()
    return parser.page_title, [s for s in parser.sections if s.heading and s.blocks]


def word_count(text: str) -> int:
    return len(text.split())


def _split_long(block: str, limit: int) -> list[str]:
    """A block over `limit` words cut between sentences (or words) into pieces of at most `limit`."""
    pieces: list[str] = []
    current: list[str] = []
    for sentence in _SENTENCE_END.split(block):
        words = sentence.split()
        while len(words) > limit:
            pieces.append(" ".join(words[:limit]))
            words = words[limit:]
        if current and word_count(" ".join(current)) + len(words) > limit:
            pieces.append(" ".join(current))
            current = []
        if words:
            current.append(" ".join(words))
    if current:
        pieces.append(" ".join(current))
    return pieces


def section_texts(blocks: list[str]) -> list[str]:
    """A section's blocks as one text (≤ MAX_WORDS words) or packed into parts of ≤ PART_WORDS."""
    whole = "\n\n".join(blocks)
    if word_count(whole) <= MAX_WORDS:
        return [whole]
    parts: list[str] = []
    current: list[str] = []
    for block in blocks:
        for piece in _split_long(block, PART_WORDS) if word_count(block) > PART_WORDS else [block]:
            if current and word_count("\n\n".join([*current, piece])) > PART_WORDS:
                parts.append("\n\n".join(current))
                current = []
            current.append(piece)
    if current:
        parts.append("\n\n".join(current))
    return parts


def first_sentence(text: str) -> tuple[str, str]:
    """(first sentence, the rest) of a text; the rest is empty when there is one sentence."""
    head, _, rest = text.partition("\n\n")
    split = _SENTENCE_END.split(head, maxsplit=1)
    first = split[0].strip()
    remainder = "\n\n".join(x for x in ((split[1] if len(split) > 1 else ""), rest) if x.strip())
    return first, remainder.strip()


def docs_from_page(page: str, html: str) -> Iterator[Doc]:
    """The documents of one HTML page (before query selection and deduplication)."""
    page_title, sections = parse_sections(html)
    for section in sections:
        title = section.heading if section.heading == page_title else f"{page_title} — {section.heading}"
        title = title.replace("¶", "").strip()
        for part, text in enumerate(section_texts(section.blocks)):
            words = word_count(text)
            if MIN_WORDS <= words <= MAX_WORDS:
                anchor = section.anchor or f"s{len(title)}"
                yield Doc(f"{page}#{anchor}/{part}", page, title, text, words)


def select_queries(docs: list[Doc], seed: int) -> None:
    """Turn about one in QUERY_SHARE eligible first parts into query documents (in place)."""
    rng = random.Random(seed)
    for doc in docs:
        if not doc.id.endswith("/0") or rng.randrange(QUERY_SHARE):
            continue
        first, rest = first_sentence(doc.text)
        if QUERY_MIN_WORDS <= word_count(first) <= QUERY_MAX_WORDS and word_count(rest) >= MIN_WORDS:
            doc.query, doc.text, doc.words = first, rest, word_count(rest)


def build_docs(pages: Iterable[tuple[str, str]], seed: int = 10) -> list[Doc]:
    """Documents of (page name, html) pairs: split, deduplicated, query documents chosen."""
    docs: list[Doc] = []
    seen_text: set[str] = set()
    seen_id: set[str] = set()
    for page, html in pages:
        if page.startswith(SKIP_PAGES):
            continue
        for doc in docs_from_page(page, html):
            digest = hashlib.sha256(doc.text.encode()).hexdigest()
            if digest in seen_text or doc.id in seen_id:
                continue
            seen_text.add(digest)
            seen_id.add(doc.id)
            docs.append(doc)
    select_queries(docs, seed)
    return docs


def distribution(words: list[int]) -> dict[str, Any]:
    values = np.asarray(words)
    edges = [30, 50, 100, 200, 300, 400, 501]
    counts, _ = np.histogram(values, bins=edges)
    return {
        "docs": len(words),
        "total_words": int(values.sum()),
        "mean": round(float(values.mean()), 1),
        **{f"p{q}": int(np.percentile(values, q)) for q in (5, 25, 50, 75, 95, 99)},
        "min": int(values.min()),
        "max": int(values.max()),
        "histogram": {f"{a}-{b - 1}": int(c) for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)},
    }


def fetch_html() -> Path:
    return unpacked_root() / HTML


def load_corpus(cache: Path = CACHE / "realistic") -> tuple[list[Doc], dict[str, Any]]:
    """The cached corpus (built on first use) and its summary."""
    path = cache / f"python3.11-doc-sections-v{CORPUS_VERSION}.jsonl"
    meta_path = path.with_suffix(".meta.json")
    if not (path.exists() and meta_path.exists()):
        html = fetch_html()
        pages = (
            (str(p.relative_to(html).with_suffix("")), p.read_text("utf-8", errors="replace"))
            for p in sorted(html.rglob("*.html"))
        )
        docs = build_docs(pages)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as handle:
            for doc in docs:
                handle.write(json.dumps(asdict(doc), ensure_ascii=False) + "\n")
        tmp.rename(path)
        meta = {
            "source": f"Debian {PACKAGE}={VERSION} ({DEB_NAME}, sha256 {SHA256})",
            "unit": (
                "Sphinx section (own prose, code blocks excluded); >500 words packed into ≤400-word parts"
            ),
            "corpus_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "query_documents": sum(1 for d in docs if d.query),
            "words": distribution([d.words for d in docs]),
        }
        meta_path.write_text(json.dumps(meta, indent=2))
    docs = [Doc(**json.loads(line)) for line in path.read_text().splitlines()]
    return docs, json.loads(meta_path.read_text())


if __name__ == "__main__":
    corpus, summary = load_corpus()
    print(json.dumps(summary, indent=2))
    sys.exit(0)
