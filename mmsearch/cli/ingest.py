"""`mmsearch ingest PATH...`: publish files as ContentEvents to Kafka."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmsearch.producer import ContentProducer, expand, file_event


def run_ingest(args: argparse.Namespace) -> int:
    paths: list[Path] = args.paths
    tenant: str = args.tenant
    tags: list[str] = args.tag
    bootstrap: str = args.bootstrap
    topic: str = args.topic
    files = list(expand(paths))
    if not files:
        print("mmsearch ingest: no text, image, audio or PDF files found", file=sys.stderr)
        return 2
    failed = 0
    with ContentProducer(bootstrap, topic, as_json=args.json) as producer:
        for done, path in enumerate(files, start=1):
            try:
                producer.publish(file_event(tenant, path, tags=tags))
            except (OSError, ValueError) as exc:
                failed += 1
                print(f"\nskipped {path}: {exc}", file=sys.stderr)
            bar = "#" * (30 * done // len(files))
            print(f"\r[{bar:30s}] {done}/{len(files)} {path.name[:40]:40s}", end="", file=sys.stderr)
        producer.flush()
    print(
        f"\npublished {len(files) - failed} events to {topic} at {bootstrap} (tenant {tenant})",
        file=sys.stderr,
    )
    return 1 if failed else 0
