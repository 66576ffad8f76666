"""The `mmsearch` command line: serve, stack, ingest, embed, search, demo, health."""

from mmsearch.cli.main import main

__all__ = ["main"]
