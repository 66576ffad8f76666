"""`mmsearch search`: a readable table of hits (or JSON) from Searcher.Search."""

from __future__ import annotations

import argparse
import json
import sys

import grpc
from google.protobuf import json_format

from mmsearch.clients.connect import auth_metadata
from mmsearch.v1 import common_pb2, searcher_pb2, searcher_pb2_grpc

MODALITIES = {
    "text": common_pb2.MODALITY_TEXT,
    "image": common_pb2.MODALITY_IMAGE,
    "audio": common_pb2.MODALITY_AUDIO,
    "document": common_pb2.MODALITY_DOCUMENT,
}


def build_request(args: argparse.Namespace) -> searcher_pb2.SearchRequest:
    request = searcher_pb2.SearchRequest(top_k=args.top_k)
    if args.image:
        request.query.image.data = args.image.read_bytes()
    elif args.audio:
        request.query.audio.data = args.audio.read_bytes()
        request.space.name = args.space or "audio"
    elif args.text:
        request.query.text = args.text
    else:
        raise SystemExit("mmsearch search: give a text query, --image FILE or --audio FILE")
    if args.space:
        request.space.name = args.space
    request.modalities.extend(MODALITIES[m] for m in args.only or ())
    if args.tag:
        request.filter.condition.field = "tags"
        request.filter.condition.eq.string_value = args.tag
    if args.hybrid:
        request.hybrid.enabled = True
        request.hybrid.rrf_k = args.rrf_k
    if args.rerank:
        request.rerank.enabled = True
        request.rerank.top_n = args.rerank
    return request


def print_table(response: searcher_pb2.SearchResponse) -> None:
    print(f"space {response.space}, {len(response.hits)} hits, {response.timings.total_ms:.0f} ms")
    print(f"{'#':>3}  {'item':32s} {'modality':8s} {'score':>7s}  stages / snippet")
    for rank, hit in enumerate(response.hits, start=1):
        modality = common_pb2.Modality.Name(hit.modality).removeprefix("MODALITY_").lower()
        stages = " ".join(
            f"{name}={getattr(hit.scores, name):.3f}"
            for name in ("vector", "bm25", "fused", "rerank")
            if hit.scores.HasField(name)
        )
        print(f"{rank:>3}  {hit.item_id[:32]:32s} {modality:8s} {hit.score:7.3f}  {stages}")
        detail = hit.metadata.title or hit.preview.snippet
        if detail:
            print(f"{'':5}{detail[:90]}")
    if response.degraded:
        print(f"degraded: {'; '.join(response.degraded_reasons)}")


def run_search(args: argparse.Namespace) -> int:
    request = build_request(args)
    with grpc.insecure_channel(args.addr, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = searcher_pb2_grpc.SearcherStub(channel)
        try:
            response: searcher_pb2.SearchResponse = stub.Search(
                request, metadata=auth_metadata(args.token), timeout=args.timeout
            )
        except grpc.RpcError as err:
            print(f"mmsearch search: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    if args.json:
        payload = json_format.MessageToDict(response)
        for hit in payload.get("hits", []):
            hit.get("preview", {}).pop("thumbnailJpeg", None)  # bytes are noise on a terminal
        print(json.dumps(payload, indent=2))
    else:
        print_table(response)
    return 0
