"""mmsearch.dev.harness: broker, Triton and `mmsearch serve --target all` come
up on free ports, and every process started (Triton's Python-backend stubs
included) is gone afterwards, also when startup fails."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mmsearch.clients.connect import health_status
from mmsearch.dev.harness import running_stack
from mmsearch.dev.metrics_scrape import descendants, scrape, total
from mmsearch.dev.processes import StartupError, pid_alive
from mmsearch.embedder.spaces import TEXT_PREPROCESSING

pytestmark = pytest.mark.integration
MODEL = "minilm_l6_text"


def text_only(work: Path) -> dict[str, str]:
    """Settings for a service that needs no model but the text one (to start fast)."""
    spaces = work / "spaces.json"
    encoder = {"modality": "text", "model": MODEL, "preprocessing": TEXT_PREPROCESSING}
    space = {"name": "minilm", "version": 1, "dimension": 384, "aliases": ["default"], "encoders": [encoder]}
    spaces.write_text(json.dumps({"spaces": [space]}))
    # OCR and the reranker are only probed for readiness here; any loaded model will do.
    return {"MMSEARCH_SPACES_FILE": str(spaces), "MMSEARCH_OCR_MODEL": MODEL, "MMSEARCH_RERANK_MODEL": MODEL}


def test_running_stack_serves_then_leaves_nothing_behind(tmp_path: Path) -> None:
    with running_stack(
        tmp_path, models=(MODEL,), env_overrides=text_only(tmp_path), startup_timeout_s=90
    ) as stack:
        assert health_status(stack.addr, "", 2.0) == "SERVING"
        assert stack.env["MMSEARCH_KAFKA_BOOTSTRAP"] == stack.bootstrap
        assert stack.settings["MMSEARCH_TRITON_URL"] == stack.triton_url
        assert set(stack.pids) == {"broker", "triton", "serve"}
        assert all(log.exists() for log in stack.logs.values())
        assert total(scrape(stack.triton_metrics_url), "nv_model_request_success_total", model=MODEL) >= 0
        assert scrape(stack.metrics_url)
        started = [pid for root in stack.pids.values() for pid in (root, *descendants(root))]
        assert len(started) > len(stack.pids)  # at least Triton's Python-backend stub
    leftover = [pid for pid in started if pid_alive(pid)]
    assert not leftover, f"still running after the stack stopped: {leftover}"


def test_failed_startup_stops_what_was_started(tmp_path: Path) -> None:
    before = set(descendants(os.getpid()))
    with (
        pytest.raises(StartupError),
        running_stack(tmp_path, models=("no_such_model",), startup_timeout_s=30),
    ):
        pytest.fail("the stack cannot be up without its model")
    assert (tmp_path / "broker.log").exists()  # the broker had started
    leftover = [pid for pid in set(descendants(os.getpid())) - before if pid_alive(pid)]
    assert not leftover, f"still running after a failed start: {leftover}"
