"""The README's main job, as a user runs it: `mmsearch stack up`, the demo,
grpcurl against the running stack, `mmsearch stack down`, all on free ports."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mmsearch.dev.kcat import install as install_kcat
from mmsearch.dev.processes import free_port, group_members, pid_alive
from mmsearch.kit.signing import DEV_PRODUCER, DEV_PRODUCER_SECRET, sign
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
GRPCURL = Path(sys.executable).parent / "grpcurl"


def run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


# The README's non-Python producer example (kcat, JSON event).
KCAT_EVENT = (
    '{"eventId":"e-kcat-1","operation":"OPERATION_UPSERT","tenant":"dev","itemId":"note-kcat",'
    '"modality":"MODALITY_TEXT","content":{"text":"The rocket lifted off at dawn over the salt flats."},'
    '"metadata":{"title":"Launch","tags":["space"]},"eventTime":"2026-11-22T10:00:00Z","version":"1"}'
)


def kcat_publish_then_search(cli: list[str], env: dict[str, str]) -> None:
    """A producer in any language: kcat (librdkafka) publishes, the indexer indexes, search finds."""
    broker = f"127.0.0.1:{env['MMSEARCH_STACK_BROKER_PORT']}"
    kcat = [str(install_kcat()), "-P", "-b", broker, "-t", "content.v1", "-k", "dev/note-kcat"]
    # Signed as the README shows with openssl: HMAC-SHA256 of the value with the producer's secret.
    signature = sign(DEV_PRODUCER_SECRET, KCAT_EVENT.encode())
    headers = ["-H", "content-type=application/json", "-H", f"mmsearch-producer={DEV_PRODUCER}"]
    published = subprocess.run(
        [*kcat, *headers, "-H", f"mmsearch-signature={signature}"],
        input=KCAT_EVENT,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert published.returncode == 0 and "ERROR" not in published.stderr, published.stderr
    deadline = time.monotonic() + 60
    while True:
        found = run([*cli, "search", "rocket at dawn over salt flats", "--top-k", "1", "--json"], env)
        hits = json.loads(found.stdout).get("hits", []) if found.returncode == 0 else []
        if hits and hits[0]["itemId"] == "note-kcat":
            return
        assert time.monotonic() < deadline, found.stdout + found.stderr
        time.sleep(1)


def kill_triton_then_up_restarts_only_triton(cli: list[str], env: dict[str, str], state_file: Path) -> None:
    """A dead part is restarted alone: the in-memory broker keeps its topics and offsets, and
    the killed Triton's backend stubs do not outlive it."""
    before = {name: entry["pid"] for name, entry in json.loads(state_file.read_text()).items()}
    os.kill(before["triton"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(before["triton"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    status = run([*cli, "stack", "status"], env)
    assert status.returncode != 0 and "DEAD" in status.stdout
    up = run([*cli, "stack", "up"], env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "triton" in up.stdout and "restarting it" in up.stdout
    after = {name: entry["pid"] for name, entry in json.loads(state_file.read_text()).items()}
    assert after["broker"] == before["broker"] and after["mmsearch"] == before["mmsearch"]
    assert after["triton"] != before["triton"]
    assert not group_members(before["triton"]), "the killed Triton's stubs outlived it"
    # mmsearch reconnects to the new Triton by itself: searches work again.
    deadline = time.monotonic() + 90
    while run([*cli, "search", "a cup of coffee", "--top-k", "1", "--json"], env).returncode != 0:
        assert time.monotonic() < deadline, "searches did not recover after Triton's restart"
        time.sleep(1)


def test_stack_up_demo_grpcurl_down(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    grpc_port, gateway_port = free_port(), free_port()
    env.update(
        MMSEARCH_STACK_RUN_DIR=str(tmp_path / "run"),
        MMSEARCH_STACK_TRITON_HTTP_PORT=str(free_port()),
        MMSEARCH_STACK_TRITON_GRPC_PORT=str(free_port()),
        MMSEARCH_STACK_TRITON_METRICS_PORT=str(free_port()),
        MMSEARCH_STACK_BROKER_PORT=str(free_port()),
        MMSEARCH_STACK_GRPC_PORT=str(grpc_port),
        MMSEARCH_STACK_METRICS_PORT=str(free_port()),
        MMSEARCH_STACK_GATEWAY_PORT=str(gateway_port),
        MMSEARCH_CLIENT_ADDR=f"127.0.0.1:{grpc_port}",
    )
    cli = [sys.executable, "-m", "mmsearch.cli"]
    state_file = tmp_path / "run" / "stack.json"
    pids: dict[str, int] = {}
    try:
        up = run([*cli, "stack", "up"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "stack is up" in up.stdout
        pids = {name: entry["pid"] for name, entry in json.loads(state_file.read_text()).items()}
        assert set(pids) == {"triton", "broker", "mmsearch"}

        again = run([*cli, "stack", "up"], env)
        assert again.returncode == 0 and "already running" in again.stdout

        demo = run([*cli, "demo"], env)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "space minilm@1" in demo.stdout
        assert "-> 'A kitten naps on the couch.'" in demo.stdout
        assert "mmsearch.v1.Embedder       SERVING" in demo.stdout
        # The main job: the sample set went through Kafka and is searchable across modalities.
        assert "Indexed and searchable" in demo.stdout
        cat_photo = demo.stdout.split("Text -> image: 'a photo of a cat'")[1]
        assert cat_photo.splitlines()[1].split()[:2] == ["1.", "chelsea"], cat_photo[:300]
        assert "(overall)                  SERVING" in demo.stdout

        found = run([*cli, "search", "a cup of coffee", "--only", "image", "--top-k", "1", "--json"], env)
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["hits"][0]["itemId"] == "photo:coffee.png"

        # The same search over HTTP/JSON through the stack's gateway, and its console.
        request = urllib.request.Request(
            f"http://127.0.0.1:{gateway_port}/v1/search",
            data=json.dumps(
                {"query": {"text": "a cup of coffee"}, "modalities": ["MODALITY_IMAGE"], "topK": 1}
            ).encode(),
            headers={"authorization": "Bearer mmsearch-dev-token", "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert json.loads(answer.read())["hits"][0]["itemId"] == "photo:coffee.png"
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway_port}/", timeout=30) as console:
            assert b"<title>mmsearch console</title>" in console.read()

        listed = run([str(GRPCURL), "-plaintext", f"127.0.0.1:{grpc_port}", "list"], env, timeout=30)
        assert listed.returncode == 0, listed.stderr
        services = set(listed.stdout.split())
        assert {
            "mmsearch.v1.Embedder",
            "mmsearch.v1.Searcher",
            "mmsearch.v1.Reranker",
            "mmsearch.v1.IndexerAdmin",
            "grpc.health.v1.Health",
        } <= services

        embedded = run(
            [
                str(GRPCURL),
                "-plaintext",
                "-H",
                "authorization: Bearer mmsearch-dev-token",
                "-d",
                '{"items": [{"text": "hello world"}]}',
                f"127.0.0.1:{grpc_port}",
                "mmsearch.v1.Embedder/Embed",
            ],
            env,
            timeout=30,
        )
        assert embedded.returncode == 0, embedded.stderr
        assert len(json.loads(embedded.stdout)["embeddings"][0]["vector"]["values"]) == 384

        kcat_publish_then_search(cli, env)
        kill_triton_then_up_restarts_only_triton(cli, env, state_file)

        status = run([*cli, "stack", "status"], env)
        assert status.returncode == 0 and "DEAD" not in status.stdout
    finally:
        down = run([*cli, "stack", "down"], env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not state_file.exists()
    assert not any(pid_alive(pid) for pid in pids.values())
