#!/usr/bin/env python3
"""Document RAG evaluation (issue #14): evidence recall@k of text-only vs multimodal retrieval.

    PYTHONPATH=$PWD .venv/bin/python bench/doc_rag_eval.py [--reports 8] [--pages 10]
        [--no-real] [--json PATH]

Documents, all published as ContentEvents (MODALITY_DOCUMENT) to a real stack
(mmsearch.dev.harness.running_stack: broker, tritonserver, `mmsearch serve`, default settings):
- generated reports (mmsearch.dev.pdfgen.report): prose pages, and per report one fact of each
  kind, each on its own page with words found nowhere else: a sentence in the text, a row of a
  ruled table (text layer), a bar chart (numbers only in pixels), a pasted table picture
  (numbers only in pixels);
- real PDFs from the Debian package asymptote-doc (sha256-pinned, unpacked under
  .cache/datasets/asymptote-doc/, not installed): the 196-page Asymptote manual and three
  shorter ones, as distractors and with 5 questions whose answer is in the manual's text.

For every question, Searcher.Retrieve (hybrid: vector + BM25, top_k 8, a token budget large
enough not to cut) in two modes: text-only (kinds=[TEXT]) and multimodal (every kind). A piece
of evidence *bears the answer* when it is text containing the answer, or a visual child on the
fact's page that shows it (the page render, or the crop of the chart / table holding it): what a
VLM would need to read. Reported: answer-bearing recall@1/3/5/8 per fact kind and mode, and
ingest figures (parse and index time per document, children per page).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmsearch.clients.connect import DEV_TOKEN, auth_metadata
from mmsearch.dev import pdfgen
from mmsearch.dev.debian import fetch_deb
from mmsearch.dev.harness import running_stack
from mmsearch.producer import ContentProducer, media_event
from mmsearch.v1 import common_pb2, indexer_pb2, indexer_pb2_grpc, searcher_pb2, searcher_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
PACKAGE, VERSION = "asymptote-doc", "2.85+ds-1"
DEB_SHA256 = "b2ae6e97c64ede66c1e41cc913f790b01188d198557203a2b3c500ba3495e6ca"
REAL = ("asymptote.pdf", "CAD.pdf", "asy-latex.pdf", "asyRefCard.pdf")
DOC_DIR = "usr/share/doc/asymptote"
# (question, page, answer text) in the Asymptote manual (asymptote.pdf).
REAL_QUESTIONS = (
    ("Which PostScript viewer does Asymptote run under UNIX to display output?", 9, "evince"),
    ("What does orient return when the three points lie on one line?", 31, "colinear"),
    ("How can the default initializer of a type be redeclared?", 62, "operator init"),
    ("Which function returns the partial sums of a real array?", 96, "partialsum"),
    (
        "How are PRC patches shaded, since PRC has no vertex shading of Bezier surfaces?",
        141,
        "mean of the four",
    ),
)
# Per report r: a place name and numbers found nowhere else in the set.
PLACES = (
    "Harwick",
    "Oskarby",
    "Lindqvist",
    "Carrow",
    "Tamsin",
    "Brevik",
    "Quillan",
    "Marlowe",
    "Ferndale",
    "Ystad",
)
KINDS = ("text", "table", "chart", "table_image")
TOP_KS = (1, 3, 5, 8)


@dataclass(frozen=True)
class Question:
    item_id: str
    where: str  # "text" | "table" | "chart" | "table_image" | "real"
    question: str
    page: int
    answer: str  # a string the answer-bearing text contains


def report_facts(r: int, pages: int) -> tuple[list[pdfgen.Fact], list[Question]]:
    place = PLACES[r % len(PLACES)]
    item = f"report-{r}"
    n = 1000 + 137 * r
    facts = [
        pdfgen.Fact(2, "text", "", f"The turbine overhaul at the {place} site cost {n},300 euros in total."),
        pdfgen.Fact(4, "table", "", f"sprockets {place}={n + 11}"),
        pdfgen.Fact(
            6, "chart", f"Defects per production line at the {place} plant", f"A={n % 97},B={n + 5},C=13"
        ),
        pdfgen.Fact(
            min(8, pages),
            "table_image",
            f"Spare parts in stock at the {place} warehouse",
            f"gaskets={n + 23},valves=77,hoses=305",
        ),
    ]
    questions = [
        Question(item, "text", f"How much did the turbine overhaul at the {place} site cost?", 2, f"{n},300"),
        Question(
            item, "table", f"How many sprockets {place} are listed in the components table?", 4, str(n + 11)
        ),
        Question(item, "chart", f"How many defects did line B have at the {place} plant?", 6, str(n + 5)),
        Question(
            item,
            "table_image",
            f"How many gaskets are in stock at the {place} warehouse?",
            min(8, pages),
            str(n + 23),
        ),
    ]
    return facts, questions


def real_documents() -> dict[str, bytes]:
    cache = ROOT / ".cache" / "datasets" / PACKAGE
    root = fetch_deb(
        cache,
        PACKAGE,
        VERSION,
        deb_name=f"{PACKAGE}_{VERSION}_all.deb",
        sha256=DEB_SHA256,
        complete=lambda r: all((r / DOC_DIR / name).exists() for name in REAL),
    )
    return {f"asymptote/{name}": (root / DOC_DIR / name).read_bytes() for name in REAL}


def wait_indexed(addr: str, tasks: int, timeout_s: float) -> float:
    """Until the enrichment topic committed `tasks` documents and nothing lags; the seconds it took."""
    started = time.monotonic()
    with grpc.insecure_channel(addr) as channel:
        stub = indexer_pb2_grpc.IndexerAdminStub(channel)
        while time.monotonic() - started < timeout_s:
            status = stub.GetStatus(
                indexer_pb2.GetStatusRequest(), metadata=auth_metadata(DEV_TOKEN), timeout=30
            )
            enrich = sum(p.committed_offset for p in status.partitions if p.topic.endswith(".enrich"))
            if enrich >= tasks and all(p.lag == 0 for p in status.partitions):
                return time.monotonic() - started
            time.sleep(2.0)
    raise SystemExit(f"documents not indexed within {timeout_s:.0f} s")


def bears_answer(evidence: searcher_pb2.Evidence, item_id: str, q: Question) -> bool:
    if evidence.citation.item_id != item_id:
        return False
    if evidence.kind == searcher_pb2.EVIDENCE_KIND_TEXT:
        return q.answer.lower() in evidence.text.lower()
    if evidence.citation.page != q.page:
        return False
    if evidence.kind == searcher_pb2.EVIDENCE_KIND_PAGE:
        return True  # the page render shows everything on the page
    holding = {
        "table": searcher_pb2.EVIDENCE_KIND_TABLE,
        "chart": searcher_pb2.EVIDENCE_KIND_FIGURE,
        "table_image": searcher_pb2.EVIDENCE_KIND_FIGURE,
    }
    return holding.get(q.where) == evidence.kind


def ask(stub: searcher_pb2_grpc.SearcherStub, q: Question, multimodal: bool) -> tuple[int | None, float]:
    """The 1-based rank of the first answer-bearing evidence (None: not in the top 8), and ms."""
    request = searcher_pb2.RetrieveRequest(
        query=common_pb2.Content(text=q.question), hybrid=True, top_k=max(TOP_KS), max_tokens=100_000
    )
    if not multimodal:
        request.kinds.append(searcher_pb2.EVIDENCE_KIND_TEXT)
    started = time.perf_counter()
    response = stub.Retrieve(request, metadata=auth_metadata(DEV_TOKEN), timeout=60)
    elapsed = (time.perf_counter() - started) * 1000
    ranked = sorted(
        (e for d in response.documents for p in d.pages for e in p.evidence), key=lambda e: e.rank
    )
    for position, evidence in enumerate(ranked, start=1):
        if bears_answer(evidence, q.item_id, q):
            return position, elapsed
    return None, elapsed


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for where in (*KINDS, "real"):
        for mode in ("text_only", "multimodal"):
            rows = [r for r in results if r["where"] == where]
            if not rows:
                continue
            ranks = [r[mode] for r in rows]
            table.setdefault(where, {"questions": len(rows)})[mode] = {
                f"R@{k}": round(sum(1 for x in ranks if x is not None and x <= k) / len(ranks), 3)
                for k in TOP_KS
            }
    return table


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reports", type=int, default=8)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--no-real", action="store_true", help="leave out the Debian PDFs")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".run" / "doc-rag-eval")
    args = parser.parse_args()
    # SIGTERM unwinds like ^C, so running_stack stops the broker, Triton and the service.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    documents: dict[str, bytes] = {}
    questions: list[Question] = []
    for r in range(args.reports):
        facts, asked = report_facts(r, args.pages)
        documents[f"report-{r}"] = pdfgen.report(args.pages, facts, seed=r, title=f"Operations report {r}")
        questions += asked
    if not args.no_real:
        documents.update(real_documents())
        questions += [Question("asymptote/asymptote.pdf", "real", q, p, a) for q, p, a in REAL_QUESTIONS]
    size_kib = sum(len(d) for d in documents.values()) >> 10
    print(f"{len(documents)} documents ({size_kib} KiB), {len(questions)} questions")

    with running_stack(args.work_dir) as stack:
        published = time.monotonic()
        with ContentProducer(stack.bootstrap, stack.topic) as producer:
            for item_id, data in documents.items():
                producer.publish(
                    media_event(
                        "dev",
                        item_id,
                        data,
                        common_pb2.MODALITY_DOCUMENT,
                        mime_type="application/pdf",
                        title=item_id,
                        source_uri=f"file:///docs/{item_id}",
                    )
                )
            producer.flush()
        index_s = wait_indexed(stack.addr, len(documents), timeout_s=3600)
        print(f"indexed in {index_s:.0f} s ({time.monotonic() - published:.0f} s from the first publish)")
        results = []
        with grpc.insecure_channel(
            stack.addr, options=[("grpc.max_receive_message_length", 64 << 20)]
        ) as channel:
            stub = searcher_pb2_grpc.SearcherStub(channel)
            for q in questions:
                text_rank, text_ms = ask(stub, q, multimodal=False)
                multi_rank, multi_ms = ask(stub, q, multimodal=True)
                results.append(
                    {
                        "where": q.where,
                        "question": q.question,
                        "item": q.item_id,
                        "page": q.page,
                        "text_only": text_rank,
                        "multimodal": multi_rank,
                        "text_only_ms": round(text_ms, 1),
                        "multimodal_ms": round(multi_ms, 1),
                    }
                )
    summary = summarize(results)
    pages = args.reports * args.pages + (196 + 7 + 11 + 3 if not args.no_real else 0)
    out = {
        "documents": len(documents),
        "pages_approx": pages,
        "questions": len(questions),
        "index_seconds": round(index_s, 1),
        "summary": summary,
        "results": results,
        "retrieve_ms_p50": sorted(r["multimodal_ms"] for r in results)[len(results) // 2],
    }
    print(f"{'answer in':12s} {'n':>3s}  {'mode':10s} " + " ".join(f"R@{k:<4d}" for k in TOP_KS))
    for where, row in summary.items():
        for mode in ("text_only", "multimodal"):
            cells = " ".join(f"{row[mode][f'R@{k}']:<6.2f}" for k in TOP_KS)
            print(f"{where:12s} {row['questions']:>3d}  {mode:10s} {cells}")
    print(f"Retrieve p50 {out['retrieve_ms_p50']} ms (multimodal)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
