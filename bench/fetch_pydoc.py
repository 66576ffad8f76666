#!/usr/bin/env python3
"""Fetch the Python 3.11 documentation (PSF license): the one pin of the Debian package, used by
bench/rerank_budget_eval.py, bench/fetch_pydocs.py (text encoder benchmarks) and
bench/realistic_corpus.py (the realistic-ingest corpus).

Downloads the Debian package `python3.11-doc` at a pinned version with `apt-get download` (no
root, nothing installed), checks its sha256 and unpacks it with `dpkg-deb -x` into
.cache/datasets/python3.11-doc/. Idempotent. Prints the folder of the reStructuredText sources
(`html/_sources/**/*.rst.txt`).

Needs the Debian package lists (`apt-get update`, as root, once per machine) the first time;
afterwards it works from .cache/ alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mmsearch.dev.debian import fetch_deb

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "datasets" / "python3.11-doc"
PACKAGE = "python3.11-doc"
VERSION = "3.11.2-6+deb12u8"
DEB_NAME = "python3.11-doc_3.11.2-6+deb12u8_all.deb"
SHA256 = "50eb63e7f636c4281e9ce1b8f10386f1def42159eddce34fc1f41c46261df71b"


HTML = Path("usr") / "share" / "doc" / "python3.11" / "html"
SOURCES = HTML / "_sources"


def _complete(root: Path) -> bool:
    return (root / SOURCES / "library" / "json.rst.txt").exists() and (
        root / HTML / "library" / "json.html"
    ).exists()


def unpacked_root() -> Path:
    """The unpacked package (downloaded and checked on first use)."""
    return fetch_deb(CACHE, PACKAGE, VERSION, deb_name=DEB_NAME, sha256=SHA256, complete=_complete)


def fetch() -> Path:
    """The reStructuredText sources."""
    return unpacked_root() / SOURCES


if __name__ == "__main__":
    print(fetch())
    sys.exit(0)
