"""The `mmsearch` command.

mmsearch serve --target all|embedder|indexer|searcher|reranker
mmsearch stack up|down|status        local stack on loopback (up --distributed: one process per replica)
mmsearch ingest PATH...              publish files as content events to Kafka
mmsearch embed TEXT...               embed texts through the gRPC API
mmsearch search TEXT|--image|--audio search the index
mmsearch retrieve QUESTION|--image  evidence with citations (documents, pages)
mmsearch demo                        the quick-start job
mmsearch health                      health of every service
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from mmsearch.clients.connect import (
    HEALTH_SERVICES,
    default_addr,
    default_bootstrap,
    default_token,
    health_status,
)
from mmsearch.kit.config import TARGETS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmsearch", description="Multimodal embedding and cross-modal search."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run services (configuration from MMSEARCH_* environment variables)")
    serve.add_argument("--target", choices=TARGETS, default="all")

    stack = sub.add_parser("stack", help="local stack: tritonserver, Kafka-protocol broker, mmsearch")
    stack.add_argument("action", choices=("up", "down", "status"))
    stack.add_argument(
        "--distributed",
        action="store_true",
        help="up: one process per service replica (2 indexers, 2 searchers) over PostgreSQL + pgvector",
    )

    ingest = sub.add_parser(
        "ingest", help="publish files (text, images, audio, PDF) as content events to Kafka"
    )
    ingest.add_argument("paths", nargs="+", type=Path, help="files or directories (recursive)")
    ingest.add_argument("--tenant", default="dev", help="owning tenant (default: dev)")
    ingest.add_argument("--tag", action="append", default=[], help="tag for every item (repeatable)")
    ingest.add_argument(
        "--bootstrap",
        default=default_bootstrap(),
        help="Kafka bootstrap servers (env MMSEARCH_CLIENT_BOOTSTRAP)",
    )
    ingest.add_argument("--topic", default="content.v1")
    ingest.add_argument(
        "--json", action="store_true", help="publish the canonical JSON mapping, not protobuf"
    )

    for name, help_text in (
        ("embed", "embed texts and print the vectors"),
        ("demo", "the quick-start job against a running stack"),
        ("search", "search the index: text, --image FILE or --audio FILE"),
        ("retrieve", "evidence for a question, grouped by document and page, with citations"),
        ("health", "health of every service"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--addr", default=default_addr(), help="gRPC address (env MMSEARCH_CLIENT_ADDR)")
        p.add_argument("--token", default=default_token(), help="bearer token (env MMSEARCH_CLIENT_TOKEN)")
        if name == "search":
            p.add_argument("text", nargs="?", help="text query")
            p.add_argument("--image", type=Path, help="query by this image file")
            p.add_argument("--audio", type=Path, help="query by this sound file")
            p.add_argument(
                "--space", default="", help="space name@version or alias (default: 'default'; audio: 'audio')"
            )
            p.add_argument(
                "--only",
                choices=("text", "image", "audio", "document"),
                action="append",
                help="restrict modalities",
            )
            p.add_argument("--tag", help="only items with this tag")
            p.add_argument("--top-k", type=int, default=10)
            p.add_argument(
                "--hybrid", action="store_true", help="fuse BM25 on the query text with the vector list (RRF)"
            )
            p.add_argument("--rrf-k", type=int, default=0, help="RRF constant (default: the server's)")
            p.add_argument(
                "--rerank", type=int, default=0, metavar="N", help="rerank the top N with the reranker"
            )
            p.add_argument("--json", action="store_true", help="print JSON")
            p.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
        if name == "retrieve":
            p.add_argument("text", nargs="?", help="the question")
            p.add_argument("--image", type=Path, help="ask with this image")
            p.add_argument("--space", default="", help="space name@version or alias (default: 'default')")
            p.add_argument(
                "--kind", choices=("text", "figure", "table", "page"), action="append", help="evidence kinds"
            )
            p.add_argument("--top-k", type=int, default=8)
            p.add_argument("--max-tokens", type=int, default=0, help="token budget (default: the server's)")
            p.add_argument("--no-hybrid", action="store_true", help="vector rankings only (no BM25)")
            p.add_argument(
                "--rerank", type=int, default=0, metavar="N", help="rerank the top N text evidence"
            )
            p.add_argument(
                "--images", type=Path, metavar="DIR", help="write the visual evidence's JPEGs here"
            )
            p.add_argument("--json", action="store_true", help="print JSON (images left out)")
            p.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
        if name == "embed":
            p.add_argument("texts", nargs="+")
            p.add_argument("--space", default="", help="space name@version or alias (default: 'default')")
            p.add_argument("--json", action="store_true", help="print JSON")
            p.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            from mmsearch.cli.serve import serve

            return serve(args.target)
        if args.command == "ingest":
            from mmsearch.cli.ingest import run_ingest

            return run_ingest(args)
        if args.command == "stack":
            from mmsearch.dev import stack as local_stack

            config = local_stack.StackConfig.from_env(distributed=args.distributed)
            action = {"up": local_stack.up, "down": local_stack.down, "status": local_stack.status}[
                args.action
            ]
            return action(config)
        if args.command == "embed":
            from mmsearch.cli.embed import embed_texts, print_embeddings

            response = embed_texts(args.addr, args.token, args.texts, args.space, args.timeout)
            print_embeddings(response, args.texts, args.json)
            return 0
        if args.command == "demo":
            from mmsearch.cli.demo import run_demo

            return run_demo(args.addr, args.token)
        if args.command == "retrieve":
            from mmsearch.cli.retrieve import run_retrieve

            return run_retrieve(args)
        if args.command == "search":
            from mmsearch.cli.search import run_search

            return run_search(args)
        if args.command == "health":
            statuses = {service: health_status(args.addr, service) for service in HEALTH_SERVICES}
            for service, value in statuses.items():
                print(f"{service or '(overall)':26s} {value}")
            return 0 if statuses[""] == "SERVING" else 1
    except grpc.RpcError as exc:
        print(f"mmsearch: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(f"mmsearch: unknown command {args.command}", file=sys.stderr)
    return 2
