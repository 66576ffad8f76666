#!/usr/bin/env python3
"""Fetch realistic paragraphs for the text-encoder benchmarks: the reStructuredText
sources of Python 3.11's documentation (PSF license), from the Debian package
`python3.11-doc` at a pinned version (`apt-get download`, sha256 check,
`dpkg-deb -x` into .cache/datasets/python3.11-doc/; nothing installed).

`paragraphs(n, seed)` returns n prose paragraphs of 30-300 words (markup,
code blocks, tables and directives dropped), seeded, so every run measures the
same texts. Run as a script to fetch and print a summary.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

from fetch_pydoc import PACKAGE, fetch

MIN_WORDS, MAX_WORDS = 30, 300
_ROLE = re.compile(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_MARKUP = re.compile(r"``|\*\*|`_*|\|")


def _clean(block: list[str]) -> str:
    text = " ".join(line.strip() for line in block)
    text = _ROLE.sub(r"\1", text)
    return re.sub(r"\s+", " ", _MARKUP.sub("", text)).strip()


def _prose(path: Path) -> list[str]:
    """Paragraphs of running text: blank-line separated, not indented (code, directive
    bodies), not headings, directives, tables or lists."""
    out, block = [], []
    for line in [*path.read_text(encoding="utf-8", errors="replace").splitlines(), ""]:
        if line.strip():
            block.append(line)
            continue
        markup = block and block[0].startswith((" ", "\t", "..", "=", "-", "*", "+", "#", ">>>", "|"))
        heading = any(set(b.strip()) <= set("=-~^*+#") for b in block)
        if block and not markup and not heading:
            text = _clean(block)
            if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                out.append(text)
        block = []
    return out


def paragraphs(n: int, seed: int = 0) -> list[str]:
    """`n` distinct prose paragraphs of 30-300 words, in a seeded order."""
    found = sorted({p for path in sorted(fetch().rglob("*.rst.txt")) for p in _prose(path)})
    random.Random(seed).shuffle(found)
    if len(found) < n:
        raise SystemExit(f"only {len(found)} paragraphs in {PACKAGE}, asked for {n}")
    return found[:n]


if __name__ == "__main__":
    texts = paragraphs(2000)
    words = sorted(len(t.split()) for t in texts)
    print(fetch())
    print(f"{len(texts)} paragraphs, words min {words[0]} median {words[len(words) // 2]} max {words[-1]}")
    print(texts[0][:300])
    sys.exit(0)
