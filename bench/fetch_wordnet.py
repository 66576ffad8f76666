#!/usr/bin/env python3
"""Fetch WordNet 3.0 (Princeton, WordNet 3.0 license) for bench/reranker_eval.py.

Downloads the Debian package `wordnet-base` at a pinned version with
`apt-get download` (no root, nothing installed), checks its sha256, and unpacks
it with `dpkg-deb -x` into .cache/datasets/wordnet-base/. Idempotent. Prints the
folder holding data.noun / data.verb / data.adj / data.adv.

Needs the Debian package lists (`apt-get update`, as root, once per machine) the
first time; afterwards it works from .cache/ alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mmsearch.dev.debian import fetch_deb

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "datasets" / "wordnet-base"
PACKAGE = "wordnet-base"
VERSION = "1:3.0-37"
DEB_NAME = "wordnet-base_1%3a3.0-37_all.deb"
SHA256 = "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752"


def fetch() -> Path:
    data = Path("usr") / "share" / "wordnet"
    root = fetch_deb(
        CACHE,
        PACKAGE,
        VERSION,
        deb_name=DEB_NAME,
        sha256=SHA256,
        complete=lambda r: (r / data / "data.noun").exists(),
    )
    return root / data


if __name__ == "__main__":
    print(fetch())
    sys.exit(0)
