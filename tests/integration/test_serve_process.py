"""`mmsearch serve` as a real process: JSON logs with trace ids, /metrics with
RED metrics, and SIGTERM draining in-flight RPCs before exiting 0."""

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from mmsearch.dev.mmsearch import start_mmsearch
from mmsearch.dev.processes import free_port, stop_pid, wait_until
from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc
from tests.conftest import DEV_TOKEN, TritonHandle

pytestmark = pytest.mark.integration
AUTH = (("authorization", f"Bearer {DEV_TOKEN}"),)
GRACE_S = 20


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def test_serve_metrics_logs_and_graceful_sigterm(triton: TritonHandle, tmp_path: Path) -> None:
    grpc_port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    env.update(
        MMSEARCH_GRPC_PORT=str(grpc_port),
        MMSEARCH_METRICS_PORT=str(metrics_port),
        MMSEARCH_TRITON_URL=triton.grpc_url,
        MMSEARCH_SHUTDOWN_GRACE_S=str(GRACE_S),
        MMSEARCH_TRITON_TIMEOUT_S="60",
    )
    log_path = tmp_path / "serve.log"
    addr = f"127.0.0.1:{grpc_port}"
    process = start_mmsearch("embedder", env, log_path, addr, timeout_s=30)
    try:
        channel = grpc.insecure_channel(addr)
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        stub.Embed(
            embedder_pb2.EmbedRequest(items=[common_pb2.Content(text="hi")]), metadata=AUTH, timeout=10
        )
        with pytest.raises(grpc.RpcError):
            stub.Embed(
                embedder_pb2.EmbedRequest(items=[common_pb2.Content(text=" ")]), metadata=AUTH, timeout=10
            )

        labels = 'grpc_method="Embed",grpc_service="mmsearch.v1.Embedder",grpc_type="unary"'
        # The server counts an RPC as it finishes: the client may hear the error a moment before.
        wait_until(
            lambda: f"grpc_server_handling_seconds_count{{{labels}}} 2.0" in metrics_text(metrics_port),
            timeout_s=5,
            what="both RPCs counted",
        )
        text = metrics_text(metrics_port)
        assert f'grpc_server_handled_total{{grpc_code="OK",{labels}}} 1.0' in text
        assert f'grpc_server_handled_total{{grpc_code="INVALID_ARGUMENT",{labels}}} 1.0' in text
        assert f"grpc_server_handling_seconds_count{{{labels}}} 2.0" in text
        assert f'grpc_server_handling_seconds_bucket{{{labels},le="0.5"}}' in text
        assert 'mmsearch_dependency_up{grpc_service="mmsearch.v1.Embedder"} 1.0' in text

        # A slow in-flight RPC: 48 texts at the 256-token limit take a few seconds on 2 cores.
        slow = embedder_pb2.EmbedRequest(
            items=[common_pb2.Content(text=f"{i} " + "word " * 300) for i in range(48)]
        )
        future = stub.Embed.future(slow, metadata=AUTH, timeout=120)
        wait_until(
            lambda: (
                'grpc_server_in_flight{grpc_service="mmsearch.v1.Embedder"} 1.0' in metrics_text(metrics_port)
            ),
            timeout_s=10,
            what="in-flight RPC",
        )
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        response = future.result(timeout=GRACE_S + 10)
        assert len(response.embeddings) == 48 and all(e.truncated for e in response.embeddings)
        assert process.wait(timeout=GRACE_S + 10) == 0
        assert time.monotonic() - sent < GRACE_S + 5
        channel.close()
    finally:
        if process.poll() is None:
            stop_pid(process.pid, timeout_s=5)

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    errors = [line for line in lines if line.get("event") == "rpc_error"]
    assert errors and errors[0]["code"] == "INVALID_ARGUMENT"
    assert len(errors[0]["trace_id"]) == 32 and len(errors[0]["span_id"]) == 16
    assert errors[0]["tenant"] == "dev"
    events = [line["event"] for line in lines]
    assert "shutdown_started" in events and events[-1] == "shutdown_complete"
