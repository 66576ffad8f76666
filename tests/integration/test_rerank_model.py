"""The minilm_maxsim_rerank Triton model, on a private tritonserver serving only it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from mmsearch.dev.processes import free_port, stop_pid
from mmsearch.dev.triton import TritonPorts, start_triton
from tests.conftest import MODEL_REPOSITORY, TRITON_VENV

pytestmark = pytest.mark.integration

MODEL = "minilm_maxsim_rerank"
QUERY = "how do I bake sourdough bread at home"
OTHER_QUERY = "symptoms of a broken ankle"
DOCS = [
    "Mix the starter, flour and water, let the dough rise overnight, then bake the loaf at 230 C.",
    "The central bank raised interest rates by a quarter point on Tuesday.",
    "Sourdough bread is leavened with a fermented starter instead of commercial yeast.",
    "A fractured ankle causes swelling, bruising and pain when putting weight on the foot.",
    "The orchestra performed Beethoven's ninth symphony to a sold-out hall.",
    "",
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpcclient.InferenceServerClient]:
    source = MODEL_REPOSITORY / MODEL
    if not (source / "1" / "model.onnx").exists():
        pytest.fail(f"{source}/1/model.onnx missing: run `make models`")
    work = tmp_path_factory.mktemp("rerank_triton")
    repo = work / "models"
    shutil.copytree(source, repo / MODEL, ignore=shutil.ignore_patterns("__pycache__", "README.md"))
    ports = TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())
    process = start_triton(TRITON_VENV, repo, ports, work / "triton.log")
    try:
        with grpcclient.InferenceServerClient(f"127.0.0.1:{ports.grpc}") as c:
            assert c.is_model_ready(MODEL)
            yield c
    finally:
        stop_pid(process.pid, timeout_s=20)
        process.wait(timeout=5)


def score(client: grpcclient.InferenceServerClient, queries: list[str], docs: list[str]) -> np.ndarray:
    assert len(queries) == len(docs)
    inputs = []
    for name, values in (("QUERY", queries), ("DOCUMENT", docs)):
        array = np.asarray([v.encode("utf-8") for v in values], dtype=object).reshape(-1, 1)
        tensor = grpcclient.InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(
        MODEL, inputs, outputs=[grpcclient.InferRequestedOutput("SCORE")], client_timeout=60
    )
    out = result.as_numpy("SCORE")
    assert out.dtype == np.float32 and out.shape == (len(queries), 1)
    return out.reshape(-1)


def test_relevant_document_outscores_irrelevant(client: grpcclient.InferenceServerClient) -> None:
    s = score(client, [QUERY] * 5, DOCS[:5])
    assert min(s[0], s[2]) > max(s[1], s[3], s[4]) + 0.1
    a = score(client, [OTHER_QUERY] * 5, DOCS[:5])
    assert a[3] == a.max()
    assert np.all((s >= -1.0) & (s <= 1.0))


def test_scores_are_deterministic(client: grpcclient.InferenceServerClient) -> None:
    first = score(client, [QUERY] * 5, DOCS[:5])
    for _ in range(3):
        np.testing.assert_array_equal(score(client, [QUERY] * 5, DOCS[:5]), first)


def test_mixed_queries_in_one_batch_match_one_by_one(client: grpcclient.InferenceServerClient) -> None:
    pairs = [(q, d) for d in DOCS[:5] for q in (QUERY, OTHER_QUERY)] * 3  # 30 rows, interleaved
    batch = score(client, [q for q, _ in pairs], [d for _, d in pairs])
    single = np.asarray([score(client, [q], [d])[0] for q, d in pairs[:10]])
    # Same documents padded into different sub-batches: equal up to float noise.
    np.testing.assert_allclose(batch[:10], single, atol=1e-4)
    np.testing.assert_allclose(batch[10:20], batch[:10], atol=1e-6)


def test_concurrent_requests_are_batched_and_split_back(client: grpcclient.InferenceServerClient) -> None:
    # Many clients at once: the dynamic batcher hands several requests to one execute().
    jobs = [([QUERY] * (1 + k % 5), DOCS[: 1 + k % 5]) for k in range(16)]
    jobs += [([OTHER_QUERY] * (1 + k % 5), DOCS[: 1 + k % 5]) for k in range(16)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda job: score(client, *job), jobs))
    reference = {q: score(client, [q] * 5, DOCS[:5]) for q in (QUERY, OTHER_QUERY)}
    for (queries, _), got in zip(jobs, results, strict=True):
        np.testing.assert_allclose(got, reference[queries[0]][: len(got)], atol=1e-4)


def test_empty_document_scores_minimum(client: grpcclient.InferenceServerClient) -> None:
    s = score(client, [QUERY] * 4, ["", "   ", DOCS[0], "?!"])
    assert s[0] == -1.0 and s[1] == -1.0
    assert s[2] > s[3] > -1.0  # punctuation-only text is still scored, just badly
    e = score(client, ["", ""], [DOCS[0], ""])
    assert e[0] == 0.0 and e[1] == -1.0


def test_a_long_document_is_truncated_not_rejected(client: grpcclient.InferenceServerClient) -> None:
    long_doc = DOCS[2] + " " + "filler words about nothing in particular " * 200
    s = score(client, [QUERY, QUERY], [long_doc, DOCS[1]])
    assert np.isfinite(s).all() and s[0] > s[1]


def test_mismatched_rows_are_an_error(client: grpcclient.InferenceServerClient) -> None:
    q = grpcclient.InferInput("QUERY", [2, 1], "BYTES")
    q.set_data_from_numpy(np.asarray([[b"a"], [b"b"]], dtype=object))
    d = grpcclient.InferInput("DOCUMENT", [1, 1], "BYTES")
    d.set_data_from_numpy(np.asarray([[b"a"]], dtype=object))
    with pytest.raises(Exception, match=r"(?i)shape|batch|DOCUMENT"):
        client.infer(MODEL, [q, d], client_timeout=30)


def encode(
    client: grpcclient.InferenceServerClient, name: str, texts: list[str]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Encode mode: (token vectors, pooled vector) per text."""
    array = np.asarray([t.encode("utf-8") for t in texts], dtype=object).reshape(-1, 1)
    tensor = grpcclient.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("TOKENS", "TOKEN_COUNT", "POOLED")]
    result = client.infer(MODEL, [tensor], outputs=outputs, client_timeout=60)
    tokens, counts, pooled = (result.as_numpy(n) for n in ("TOKENS", "TOKEN_COUNT", "POOLED"))
    assert tokens.dtype == np.float16 and tokens.shape[0] == len(texts) and tokens.shape[2] == 384
    assert counts.shape == (len(texts), 1) and pooled.shape == (len(texts), 384)
    return [(tokens[i, : int(counts[i, 0])].astype(np.float32), pooled[i]) for i in range(len(texts))]


def test_encode_mode_gives_what_scoring_uses(client: grpcclient.InferenceServerClient) -> None:
    """Stored vectors reproduce SCORE: 0.2 * cosine + 0.8 * MaxSim over the encode-mode outputs."""
    docs = DOCS[:5]
    encoded = encode(client, "DOCUMENT", docs)
    (q_tokens, q_pooled) = encode(client, "QUERY", [QUERY])[0]
    assert all(len(t) > 5 for t, _ in encoded)
    np.testing.assert_allclose(np.linalg.norm(encoded[0][0], axis=1), 1.0, atol=2e-3)
    stored = [
        0.2 * float(q_pooled @ p) + 0.8 * float((q_tokens @ t.T).max(axis=1).mean()) for t, p in encoded
    ]
    np.testing.assert_allclose(stored, score(client, [QUERY] * 5, docs), atol=2e-3)
    # An empty text: no tokens. Neither input: an error.
    assert len(encode(client, "DOCUMENT", ["", DOCS[0]])[0][0]) == 0
    with pytest.raises(Exception, match=r"(?i)QUERY|DOCUMENT|input"):
        client.infer(MODEL, [], client_timeout=30)
