"""`mmsearch retrieve`: Searcher.Retrieve's evidence, grouped by document and page, with citations."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

import grpc
from google.protobuf import json_format

from mmsearch.clients.connect import auth_metadata
from mmsearch.v1 import searcher_pb2, searcher_pb2_grpc

KINDS = {
    "text": searcher_pb2.EVIDENCE_KIND_TEXT,
    "figure": searcher_pb2.EVIDENCE_KIND_FIGURE,
    "table": searcher_pb2.EVIDENCE_KIND_TABLE,
    "page": searcher_pb2.EVIDENCE_KIND_PAGE,
}


def build_request(args: argparse.Namespace) -> searcher_pb2.RetrieveRequest:
    request = searcher_pb2.RetrieveRequest(
        top_k=args.top_k,
        max_tokens=args.max_tokens,
        hybrid=not args.no_hybrid,
        include_images=bool(args.images),
    )
    if args.image:
        request.query.image.data = args.image.read_bytes()
        request.hybrid = False
    elif args.text:
        request.query.text = args.text
    else:
        raise SystemExit("mmsearch retrieve: give a question or --image FILE")
    if args.space:
        request.space.name = args.space
    request.kinds.extend(KINDS[k] for k in args.kind or ())
    if args.rerank:
        request.rerank.enabled = True
        request.rerank.top_n = args.rerank
    return request


def kind_name(kind: int) -> str:
    return searcher_pb2.EvidenceKind.Name(kind).removeprefix("EVIDENCE_KIND_").lower()  # type: ignore[arg-type]


def citation(evidence: searcher_pb2.Evidence) -> str:
    """'[report p.12 (72,103)-(523,185)]' or '[note 120-480]'."""
    c = evidence.citation
    where = f"p.{c.page}" if c.page else f"chars {c.start}-{c.end}"
    if c.HasField("bbox"):
        b = c.bbox
        where += f" ({b.x0:.0f},{b.y0:.0f})-({b.x1:.0f},{b.y1:.0f})"
    return f"[{c.item_id} {where}]"


def print_evidence(response: searcher_pb2.RetrieveResponse, images: Path | None) -> None:
    count = sum(len(p.evidence) for d in response.documents for p in d.pages)
    print(
        f"space {response.space}, {count} pieces of evidence in {len(response.documents)} documents, "
        f"~{response.used_tokens} tokens, {response.timings.total_ms:.0f} ms "
        f"({response.omitted_for_budget} over budget, {response.duplicates_removed} duplicates)"
    )
    for document in response.documents:
        title = document.metadata.title or document.item_id
        print(f"\n== {title} ({document.item_id}) score {document.score:.4f}")
        for page in document.pages:
            if page.page:
                print(f"  -- page {page.page}")
            for evidence in page.evidence:
                text = " ".join(evidence.text.split())
                print(f"   #{evidence.rank:<2} {kind_name(evidence.kind):6s} {citation(evidence)}")
                if text:  # whole: this is what a prompt would quote
                    print(textwrap.fill(text, 100, initial_indent=" " * 7, subsequent_indent=" " * 7))
                if evidence.image_ref:
                    print(f"       image: {evidence.image_ref}")
                if images is not None and evidence.image_jpeg:
                    images.mkdir(parents=True, exist_ok=True)
                    name = f"{evidence.rank:02d}-{document.item_id.replace('/', '_')[-40:]}-p{page.page}.jpg"
                    (images / name).write_bytes(evidence.image_jpeg)
                    print(f"       saved: {images / name}")
    if response.degraded:
        print(f"\ndegraded: {'; '.join(response.degraded_reasons)}")


def run_retrieve(args: argparse.Namespace) -> int:
    request = build_request(args)
    with grpc.insecure_channel(args.addr, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = searcher_pb2_grpc.SearcherStub(channel)
        try:
            response: searcher_pb2.RetrieveResponse = stub.Retrieve(
                request, metadata=auth_metadata(args.token), timeout=args.timeout
            )
        except grpc.RpcError as err:
            print(f"mmsearch retrieve: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    if args.json:
        payload = json_format.MessageToDict(response)
        for document in payload.get("documents", []):
            for page in document.get("pages", []):
                for evidence in page.get("evidence", []):
                    evidence.pop("imageJpeg", None)
        print(json.dumps(payload, indent=2))
    else:
        print_evidence(response, args.images)
    return 0
