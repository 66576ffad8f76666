"""The `mmsearch` command.

mmsearch serve --target all|embedder|indexer|searcher|reranker
mmsearch stack up|down|status        local stack on loopback
mmsearch embed TEXT...               embed texts through the gRPC API
mmsearch demo                        the quick-start job
mmsearch health                      health of every service
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np
from prometheus_client import CollectorRegistry

from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc
from services.client import (
    HEALTH_SERVICES,
    auth_metadata,
    default_addr,
    default_bootstrap,
    default_token,
    health_status,
)
from services.kit.config import TARGETS, ConfigError, Target, load_settings

DEMO_SENTENCES = (
    "A cat is sleeping on the sofa.",
    "A kitten naps on the couch.",
    "The central bank raised interest rates again.",
    "Inflation pushed the Federal Reserve to tighten policy.",
    "How do I bake sourdough bread at home?",
    "A simple recipe for homemade bread with a crispy crust.",
)


def _serve(target: Target) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"mmsearch: {exc}", file=sys.stderr)
        return 2
    from services.kit.component import Deps
    from services.kit.logging import configure_logging
    from services.kit.server import serve_until_signalled, start_server
    from services.kit.tracing import setup_tracing
    from services.stores.provider import StoreProvider
    from services.targets import components_for

    service_name = settings.service_name if target == "all" else f"{settings.service_name}-{target}"
    configure_logging(settings.log_level, settings.log_format, service_name)
    provider = setup_tracing(service_name, settings.otlp_endpoint)

    async def run() -> None:
        registry = CollectorRegistry()
        running = await start_server(
            settings,
            components_for(target, Deps(settings, registry, provider, StoreProvider(settings))),
            registry=registry,
            tracer_provider=provider,
        )
        await serve_until_signalled(running)

    try:
        asyncio.run(run())
    except ConfigError as exc:  # e.g. a bad spaces file, found while building a component
        print(f"mmsearch: {exc}", file=sys.stderr)
        return 2
    finally:
        provider.shutdown()
    return 0


def _embed(
    addr: str, token: str, texts: Sequence[str], space: str, timeout_s: float
) -> embedder_pb2.EmbedResponse:
    with grpc.insecure_channel(addr) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        request = embedder_pb2.EmbedRequest(
            space=common_pb2.SpaceRef(name=space), items=[common_pb2.Content(text=t) for t in texts]
        )
        response: embedder_pb2.EmbedResponse = stub.Embed(
            request, metadata=auth_metadata(token), timeout=timeout_s
        )
        return response


def _print_embeddings(response: embedder_pb2.EmbedResponse, texts: Sequence[str], as_json: bool) -> None:
    if as_json:
        out = [
            {
                "text": text,
                "space": response.space,
                "model": e.model,
                "model_version": e.model_version,
                "tokens": e.input_tokens,
                "truncated": e.truncated,
                "vector": list(e.vector.values),
            }
            for text, e in zip(texts, response.embeddings, strict=True)
        ]
        print(json.dumps(out))
        return
    print(f"space {response.space}")
    for text, e in zip(texts, response.embeddings, strict=True):
        vector = np.asarray(e.vector.values)
        head = " ".join(f"{v:+.3f}" for v in vector[:4])
        truncated = " TRUNCATED" if e.truncated else ""
        print(
            f"  {len(vector)}-d |v|={np.linalg.norm(vector):.3f} [{head} ...] "
            f"{e.model}/{e.model_version} tokens={e.input_tokens}{truncated}  {text!r}"
        )


def _demo(addr: str, token: str) -> int:
    print(f"\nEmbedding {len(DEMO_SENTENCES)} sentences through {addr} (Embedder.Embed -> Triton):\n")
    response = _embed(addr, token, DEMO_SENTENCES, "", 30.0)
    _print_embeddings(response, DEMO_SENTENCES, as_json=False)
    vectors = np.asarray([e.vector.values for e in response.embeddings])
    similarity = vectors @ vectors.T
    print("\nNearest neighbour of each sentence:")
    for i, row in enumerate(similarity):
        masked = row.copy()
        masked[i] = -np.inf
        j = int(np.argmax(masked))
        print(f"  {DEMO_SENTENCES[i]!r}\n      -> {DEMO_SENTENCES[j]!r} ({row[j]:.2f})")
    from services.demo import cross_modal_demo

    cross_modal_demo(addr, token, default_bootstrap())
    print("\nHealth:")
    for service in HEALTH_SERVICES:
        print(f"  {service or '(overall)':26s} {health_status(addr, service)}")
    print(
        "\nThe stack keeps running: try `.venv/bin/grpcurl -plaintext "
        f'{addr} list`, `.venv/bin/mmsearch embed "some text"`; stop it with `make down`.'
    )
    return 0


def _ingest(args: argparse.Namespace) -> int:
    paths: list[Path] = args.paths
    tenant: str = args.tenant
    tags: list[str] = args.tag
    bootstrap: str = args.bootstrap
    topic: str = args.topic
    from services.producer import ContentProducer, expand, file_event

    files = list(expand(paths))
    if not files:
        print("mmsearch ingest: no text, image or audio files found", file=sys.stderr)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmsearch", description="Multimodal embedding and cross-modal search."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run services (configuration from MMSEARCH_* environment variables)")
    serve.add_argument("--target", choices=TARGETS, default="all")

    stack = sub.add_parser("stack", help="local stack: tritonserver, Kafka-protocol broker, mmsearch")
    stack.add_argument("action", choices=("up", "down", "status"))

    ingest = sub.add_parser("ingest", help="publish files (text, images, audio) as content events to Kafka")
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
                "--only", choices=("text", "image", "audio"), action="append", help="restrict modalities"
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
        if name == "embed":
            p.add_argument("texts", nargs="+")
            p.add_argument("--space", default="", help="space name@version or alias (default: 'default')")
            p.add_argument("--json", action="store_true", help="print JSON")
            p.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args.target)
        if args.command == "ingest":
            return _ingest(args)
        if args.command == "stack":
            from services.localstack import stack as local_stack

            config = local_stack.StackConfig.from_env()
            action = {"up": local_stack.up, "down": local_stack.down, "status": local_stack.status}[
                args.action
            ]
            return action(config)
        if args.command == "embed":
            response = _embed(args.addr, args.token, args.texts, args.space, args.timeout)
            _print_embeddings(response, args.texts, args.json)
            return 0
        if args.command == "demo":
            return _demo(args.addr, args.token)
        if args.command == "search":
            from services.search_cli import run_search

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


if __name__ == "__main__":
    sys.exit(main())
