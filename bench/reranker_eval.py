#!/usr/bin/env python3
"""Does MaxSim reranking over all-MiniLM-L6-v2 beat plain cosine? Measured on WordNet 3.0.

Task (WordNet gloss retrieval, the context-gloss formulation of word sense
disambiguation used by e.g. GlossBERT): the query is one of WordNet's own usage
examples ("he sat on the bank of the river"); the documents are dictionary
entries "lemma, lemma: definition" (examples are NOT part of the documents); the
one relevant document is the entry of the synset the example belongs to. The
corpus holds the relevant entries, every other sense of every lemma of those
synsets (the hard negatives), and random entries up to --corpus.

Pipeline, as in production: first stage = cosine of mean-pooled embeddings over
the whole corpus, top --candidates (30) kept; the reranker re-scores only those.
Scores come from model_repository/minilm_maxsim_rerank/1/model.py (its
`Reranker`, run in-process with ONNX Runtime on the same int8 ONNX file Triton
loads). Queries are split in two halves: the mixing weight is picked on `dev`
and reported on `test`, so the headline numbers are not tuned on themselves.

Reproduce (data fetched by bench/fetch_wordnet.py into .cache/):

    .venv-triton/bin/python bench/reranker_eval.py --json .run/reranker_eval.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from fetch_wordnet import PACKAGE, SHA256, VERSION, fetch  # noqa: E402

MODEL_DIR = ROOT / "model_repository" / "minilm_maxsim_rerank"
WEIGHTS = [round(0.1 * k, 1) for k in range(11)]
POS_FILES = ("noun", "verb", "adj", "adv")
K = 10


@dataclass
class Synset:
    key: str
    lemmas: list[str]
    definition: str
    examples: list[str]

    @property
    def entry(self) -> str:
        return f"{', '.join(self.lemmas)}: {self.definition}"


def parse_wordnet(folder: Path) -> list[Synset]:
    synsets = []
    for pos in POS_FILES:
        for line in (folder / f"data.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # license header
            head, gloss = line.split("|", 1)
            fields = head.split()
            count = int(fields[3], 16)
            words = fields[4 : 4 + 2 * count : 2]
            lemmas = list(dict.fromkeys(re.sub(r"\(.*\)$", "", w).replace("_", " ") for w in words))
            examples = [e.strip() for e in re.findall(r'"([^"]+)"', gloss)]
            definition = re.sub(r'"[^"]*"', "", gloss).strip().strip(";").strip()
            definition = re.sub(r"\s*;\s*(;\s*)*", "; ", definition).strip("; ")
            synsets.append(Synset(f"{pos}:{fields[0]}", lemmas, definition, examples))
    return synsets


def build_task(
    synsets: list[Synset], n_queries: int, corpus_size: int, seed: int
) -> tuple[list[tuple[str, int]], list[Synset]]:
    rng = random.Random(seed)
    pool = [s for s in synsets if s.definition and any(len(e.split()) >= 4 for e in s.examples)]
    chosen = rng.sample(pool, n_queries)
    by_lemma: dict[str, list[Synset]] = {}
    for s in synsets:
        for lemma in s.lemmas:
            by_lemma.setdefault(lemma.lower(), []).append(s)
    corpus: dict[str, Synset] = {s.key: s for s in chosen}
    for s in chosen:
        for lemma in s.lemmas:
            for other in by_lemma[lemma.lower()]:
                if other.definition:
                    corpus.setdefault(other.key, other)
    fill = [s for s in synsets if s.definition and s.key not in corpus]
    rng.shuffle(fill)
    for s in fill[: max(0, corpus_size - len(corpus))]:
        corpus[s.key] = s
    docs = list(corpus.values())
    index = {s.key: i for i, s in enumerate(docs)}
    queries = []
    for s in chosen:
        example = rng.choice([e for e in s.examples if len(e.split()) >= 4])
        queries.append((example, index[s.key]))
    return queries, docs


def load_reranker(params: dict[str, str]) -> Any:
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("maxsim_model", MODEL_DIR / "1" / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.Reranker(str(MODEL_DIR / "1"), params)


def metrics(rank: int | None) -> dict[str, float]:
    """Binary relevance with one relevant document; rank is 1-based, None = not in the list."""
    hit = rank is not None and rank <= K
    return {
        "ndcg@10": 1.0 / np.log2(rank + 1) if hit and rank else 0.0,
        "mrr@10": 1.0 / rank if hit and rank else 0.0,
        "recall@10": 1.0 if hit else 0.0,
    }


def ndcg_per_query(ranks: list[int | None]) -> np.ndarray:
    return np.asarray([metrics(r)["ndcg@10"] for r in ranks])


def paired_bootstrap(a: np.ndarray, b: np.ndarray, seed: int, rounds: int = 2000) -> dict[str, float]:
    """Mean of b - a over queries with a 95% bootstrap interval, and per-query wins/losses of b."""
    diff = b - a
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(rounds, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "delta_ndcg@10": round(float(diff.mean()), 4),
        "ci95_low": round(float(low), 4),
        "ci95_high": round(float(high), 4),
        "wins": int((diff > 0).sum()),
        "losses": int((diff < 0).sum()),
    }


def deployed_params() -> dict[str, str]:
    """The parameters config.pbtxt deploys (key / string_value pairs)."""
    text = (MODEL_DIR / "config.pbtxt").read_text()
    pairs = re.findall(r'key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"', text)
    return dict(pairs)


def mean_metrics(ranks: list[int | None]) -> dict[str, float]:
    rows = [metrics(r) for r in ranks]
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}


@dataclass
class Candidates:
    """One query's top-k first-stage candidates and their scores under each method."""

    relevant_pos: int | None  # position of the relevant entry among the candidates
    cosine: np.ndarray
    maxsim: np.ndarray
    maxsim_nopunct: np.ndarray


def score_candidates(
    module: Any, reranker: Any, queries: list[tuple[str, int]], docs: list[Synset], k: int
) -> tuple[list[Candidates], float, np.ndarray, list[Any]]:
    """First stage over the whole corpus, then the reranker's components on the top k."""
    t0 = time.perf_counter()
    doc_enc = reranker.encode([d.entry for d in docs], query=False)
    q_enc = reranker.encode([q for q, _ in queries], query=True)
    encode_s = time.perf_counter() - t0
    doc_matrix = np.stack([e.pooled for e in doc_enc])
    stripped: dict[int, Any] = {}

    def nopunct(e: Any) -> Any:
        keep = ~reranker.punctuation[e.ids]
        return module.Encoded(e.pooled, e.tokens[keep], e.ids[keep]) if keep.any() else e

    rows = []
    for (_, relevant), qe in zip(queries, q_enc, strict=True):
        cos_all = doc_matrix @ qe.pooled
        top = np.argsort(-cos_all, kind="stable")[:k]
        for i in top:
            if i not in stripped:
                stripped[i] = nopunct(doc_enc[i])
        rows.append(
            Candidates(
                relevant_pos=int(np.where(top == relevant)[0][0]) if relevant in top else None,
                cosine=cos_all[top],
                maxsim=reranker.maxsim(qe, [doc_enc[i] for i in top]),
                maxsim_nopunct=reranker.maxsim(nopunct(qe), [stripped[i] for i in top]),
            )
        )
    return rows, encode_s, doc_matrix, q_enc


def ranks(rows: list[Candidates], variant: str, w: float, subset: list[int]) -> list[int | None]:
    """1-based rank of the relevant entry after reranking by w*cosine + (1-w)*variant."""
    out: list[int | None] = []
    for k in subset:
        row = rows[k]
        if row.relevant_pos is None:
            out.append(None)
            continue
        scores = w * row.cosine + (1 - w) * getattr(row, variant)
        # Ties are broken by first-stage order (stable sort).
        order = np.argsort(-scores, kind="stable")
        out.append(int(np.where(order == row.relevant_pos)[0][0]) + 1)
    return out


def method_name(variant: str, w: float) -> str:
    return f"{w} cosine + {round(1 - w, 1)} {variant}"


def consistency_check(module: Any, params: dict[str, str], query: str, sample: list[str]) -> float:
    """The in-process scoring used here must equal Reranker.score(), which the Triton model runs."""
    deployed = module.Reranker(str(MODEL_DIR / "1"), params)
    end_to_end = deployed.score([query] * len(sample), sample)
    qe = deployed.encode([query], query=True)[0]
    cands = deployed.encode(sample, query=False)
    cosine = np.stack([c.pooled for c in cands]) @ qe.pooled
    manual = deployed.combine(cosine, deployed.maxsim(qe, cands))
    return float(np.max(np.abs(end_to_end - manual)))


def evaluate(rows: list[Candidates], seed: int) -> dict[str, Any]:
    ids = list(range(len(rows)))
    random.Random(seed + 1).shuffle(ids)
    splits = {"dev": sorted(ids[: len(ids) // 2]), "test": sorted(ids[len(ids) // 2 :]), "all": sorted(ids)}
    grid = {
        method_name(v, w): {s: mean_metrics(ranks(rows, v, w, idx)) for s, idx in splits.items()}
        for v in ("maxsim", "maxsim_nopunct")
        for w in WEIGHTS
    }
    best = {}
    for variant in ("maxsim", "maxsim_nopunct"):
        mixes = [w for w in WEIGHTS if 0 < w < 1]
        w = max(mixes, key=lambda w: (grid[method_name(variant, w)]["dev"]["ndcg@10"], -abs(w - 0.5)))
        best[variant] = {"cosine_weight": w, "name": method_name(variant, w)}

    params = deployed_params()
    deployed_w = float(params["cosine_weight"])
    deployed_variant = "maxsim_nopunct" if params["skip_punctuation"] == "true" else "maxsim"
    deployed = method_name(deployed_variant, deployed_w)
    cosine_ndcg = {s: ndcg_per_query(ranks(rows, "maxsim", 1.0, idx)) for s, idx in splits.items()}
    significance = {
        label: {
            s: paired_bootstrap(cosine_ndcg[s], ndcg_per_query(ranks(rows, v, w, splits[s])), seed)
            for s in ("test", "all")
        }
        for label, (v, w) in {
            "MaxSim alone": ("maxsim", 0.0),
            "deployed": (deployed_variant, deployed_w),
        }.items()
    }
    table = {
        "cosine (first stage, mean-pooled)": grid[method_name("maxsim", 1.0)],
        "MaxSim (all tokens but [CLS]/[SEP])": grid[method_name("maxsim", 0.0)],
        "MaxSim (no punctuation)": grid[method_name("maxsim_nopunct", 0.0)],
        f"{best['maxsim']['cosine_weight']} cosine + MaxSim (w picked on dev)": grid[best["maxsim"]["name"]],
        f"{best['maxsim_nopunct']['cosine_weight']} cosine + MaxSim no punct (w picked on dev)": grid[
            best["maxsim_nopunct"]["name"]
        ],
        f"**deployed** (config.pbtxt: cosine_weight={deployed_w}, "
        f"skip_punctuation={params['skip_punctuation']})": grid[deployed],
    }
    return {
        "splits": {s: len(idx) for s, idx in splits.items()},
        "table": table,
        "best_weight_on_dev": best,
        "deployed": {"params": params, "name": deployed},
        "significance_vs_cosine": significance,
        "grid": grid,
    }


def report(result: dict[str, Any]) -> None:
    n = result["splits"]
    k = result["candidates"]
    print(
        f"WordNet 3.0 gloss retrieval (Debian {PACKAGE}={VERSION}): {n['all']} queries "
        f"(dev {n['dev']} / test {n['test']}), {result['dataset']['corpus']} entries, rerank top-{k}"
    )
    print(f"first-stage recall@{k} (ceiling for any reranker): {result['first_stage_recall']:.4f}\n")
    print(f"| method (test split, n={n['test']}) | nDCG@10 | MRR@10 | Recall@10 | nDCG@10 (all {n['all']}) |")
    print("|---|---|---|---|---|")
    for name, r in result["table"].items():
        t, a = r["test"], r["all"]
        print(
            f"| {name} | {t['ndcg@10']:.4f} | {t['mrr@10']:.4f} | {t['recall@10']:.4f} | {a['ndcg@10']:.4f} |"
        )
    print()
    for label, by_split in result["significance_vs_cosine"].items():
        for split, r in by_split.items():
            print(
                f"{label} vs cosine, {split}: nDCG@10 {r['delta_ndcg@10']:+.4f} "
                f"(95% bootstrap CI {r['ci95_low']:+.4f} .. {r['ci95_high']:+.4f}; "
                f"{r['wins']} queries better, {r['losses']} worse)"
            )
    print(
        f"\nencode {n['all'] + result['dataset']['corpus']} texts: {result['encode_seconds']}s; "
        f"total {result['total_seconds']}s; in-process vs Reranker.score() max |diff| "
        f"{result['consistency_max_abs_diff']:.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--corpus", type=int, default=10000)
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = auto)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    started = time.perf_counter()

    synsets = parse_wordnet(fetch())
    queries, docs = build_task(synsets, args.queries, args.corpus, args.seed)
    # Punctuation tokens are kept here so both MaxSim variants come from one encoding.
    module, reranker = load_reranker({"skip_punctuation": "false", "intra_op_threads": str(args.threads)})
    rows, encode_s, doc_matrix, q_enc = score_candidates(module, reranker, queries, docs, args.candidates)
    result = evaluate(rows, args.seed)
    sample = [docs[i].entry for i in np.argsort(-(doc_matrix @ q_enc[0].pooled))[:5]]
    result |= {
        "dataset": {
            "name": "WordNet 3.0 gloss retrieval (usage example -> dictionary entry)",
            "source": f"Debian package {PACKAGE}={VERSION} (apt-get download; bench/fetch_wordnet.py)",
            "sha256": SHA256,
            "license": "WordNet 3.0 license (Princeton University; permissive, attribution)",
            "queries": len(queries),
            "corpus": len(docs),
            "seed": args.seed,
        },
        "candidates": args.candidates,
        "first_stage_recall": round(float(np.mean([r.relevant_pos is not None for r in rows])), 4),
        "consistency_max_abs_diff": consistency_check(
            module, result["deployed"]["params"], queries[0][0], sample
        ),
        "encode_seconds": round(encode_s, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
