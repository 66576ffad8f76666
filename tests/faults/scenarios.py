"""Faults and one run of the suite: start the rig, publish the workload, inject the fault
once a fifth of the events is committed, measure recovery, drain, stop everything and audit
the store item by item. Each run appends one JSON line to the results file
(MMSEARCH_FAULTS_RESULTS, default .run/faults/results.jsonl), which docs/reliability.md quotes."""

from __future__ import annotations

import json
import os
import random
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from mmsearch.clients.connect import DEV_TOKEN, auth_metadata
from mmsearch.dev.harness import ALL_MODELS
from mmsearch.v1 import common_pb2, searcher_pb2, searcher_pb2_grpc
from tests.faults.rig import Rig, Topology, start_rig
from tests.faults.workload import TENANTS, Workload, audit

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {TENANTS[0]: DEV_TOKEN, TENANTS[1]: "mmsearch-dev-token-tenant-b"}
OUTAGE_S = 5.0
SLOW_S, SLOW_DELAY_S = 20.0, 0.25


@dataclass
class Window:
    start: float
    end: float  # when the fault was over (the part restarted, the dependency back)
    what: str
    # A killed process: from its (last) SIGKILL until its restart answered SERVING.
    restart_s: float | None = None


Fault = Callable[[Rig, random.Random], Window]


def kill_service(name: str, times: int = 1, gap_s: tuple[float, float] = (0.3, 1.5)) -> Fault:
    """SIGKILL the process (its whole group), restart it at once as a supervisor would;
    `times` > 1 kills again shortly after each restart, so kills land mid-write."""

    def fault(rig: Rig, rng: random.Random) -> Window:
        start = time.monotonic()
        for i in range(times):
            if i:
                time.sleep(rng.uniform(*gap_s))
            rig.kill_service(name)
            end = time.monotonic()
            rig.start_service(name)
        restart = time.monotonic() - end
        return Window(start, end, f"kill -9 {name}" + (f" x{times}" if times > 1 else ""), restart)

    return fault


def kill_triton(rig: Rig, rng: random.Random) -> Window:
    start = time.monotonic()
    stubs = len(rig.triton_stubs())
    rig.triton.kill()  # the server and its Python-backend stubs (one process group)
    time.sleep(OUTAGE_S)
    rig.triton.restart(timeout_s=180)
    return Window(start, time.monotonic(), f"kill -9 tritonserver + {stubs} stubs, {OUTAGE_S:.0f}s down")


def kill_triton_stubs(rig: Rig, rng: random.Random) -> Window:
    """The stubs die, the server lives (an OOM kill): Triton 2.51 keeps reporting the models
    ready and never restarts a stub; the runbook's repair (unload + load) is applied after
    OUTAGE_S, as an operator or a liveness probe would."""
    start = time.monotonic()
    stubs = rig.triton_stubs()
    for pid in stubs:
        os.kill(pid, 9)
    time.sleep(OUTAGE_S)
    base = f"http://127.0.0.1:{rig.triton.ports.http}/v2/repository/models"
    for model in ALL_MODELS:
        for action in ("unload", "load"):
            request = urllib.request.Request(f"{base}/{model}/{action}", method="POST", data=b"")
            with urllib.request.urlopen(request, timeout=120) as resp:
                assert resp.status == 200, f"{action} {model}: {resp.status}"
    return Window(
        start, time.monotonic(), f"kill -9 {len(stubs)} Python-backend stubs, repaired after {OUTAGE_S:.0f}s"
    )


def kill_broker(rig: Rig, rng: random.Random) -> Window:
    start = time.monotonic()
    rig.broker.kill()
    time.sleep(OUTAGE_S)
    rig.broker.restart()
    return Window(start, time.monotonic(), f"kill -9 broker (S3-backed), {OUTAGE_S:.0f}s down")


def slow(part: str) -> Fault:
    def fault(rig: Rig, rng: random.Random) -> Window:
        proxy = rig.triton_proxy if part == "triton" else rig.broker_proxy
        start = time.monotonic()
        proxy.delay_s = SLOW_DELAY_S
        time.sleep(SLOW_S)
        proxy.delay_s = 0.0
        return Window(
            start, time.monotonic(), f"{part} +{SLOW_DELAY_S * 1000:.0f} ms per chunk for {SLOW_S:.0f}s"
        )

    return fault


def partition_broker(rig: Rig, rng: random.Random) -> Window:
    start = time.monotonic()
    rig.broker_proxy.set_blackhole(True)
    time.sleep(15.0)
    rig.broker_proxy.set_blackhole(False)
    return Window(start, time.monotonic(), "broker unreachable (connections hang) for 15s")


def sequence(*faults: Fault) -> Fault:
    def fault(rig: Rig, rng: random.Random) -> Window:
        windows = []
        for one in faults:
            windows.append(one(rig, rng))
            rig.wait("progress", 180, since=windows[-1].end)
        restarts = [w.restart_s for w in windows if w.restart_s is not None]
        return Window(
            windows[0].start,
            windows[-1].end,
            "; ".join(w.what for w in windows),
            max(restarts) if restarts else None,
        )

    return fault


def cross_tenant(rig: Rig, workload: Workload) -> dict[str, int]:
    """Each tenant's probe texts searched with every tenant's token: a hit outside the caller's
    own items is a cross-tenant read; the owner must find its item in the top 5."""
    own_items = {t: {e.item_id for e in workload.expected if e.tenant == t} for t in TENANTS}
    foreign, found, queries = 0, 0, 0
    with grpc.insecure_channel(rig.addr("all")) as channel:
        stub = searcher_pb2_grpc.SearcherStub(channel)
        for owner, probes in workload.probes.items():
            for item_id, text in probes:
                for caller, token in TOKENS.items():
                    response = stub.Search(
                        searcher_pb2.SearchRequest(query=common_pb2.Content(text=text[:1000]), top_k=5),
                        metadata=auth_metadata(token),
                        timeout=30,
                    )
                    queries += 1
                    foreign += sum(1 for h in response.hits if h.item_id not in own_items[caller])
                    found += int(caller == owner and item_id in [h.item_id for h in response.hits])
    return {"queries": queries, "cross_tenant_hits": foreign, "owner_found": found}


async def run(
    name: str, work_dir: Path, topology: Topology, fault: Fault, workload: Workload, *, seed: int = 1
) -> dict[str, Any]:
    rng = random.Random(seed)
    rig = start_rig(work_dir, topology)
    row: dict[str, Any] = {"scenario": name, "topology": topology, "events": len(workload.events)}
    try:
        rig.start_probes()
        t0 = time.monotonic()
        rig.publish(workload.events)
        rig.wait_committed(0.2)
        window = fault(rig, rng)
        row["fault"] = window.what
        row["fault_s"] = round(window.end - window.start, 1)
        if window.restart_s is not None:
            row["restart_to_serving_s"] = round(window.restart_s, 1)
        row["serving_after_s"] = round(rig.wait("serving", 180, since=window.end), 1)
        done = rig.wait("done", 600, since=window.end)
        try:
            progress = rig.wait("progress", 1, since=window.end)
        except TimeoutError:
            progress = done
        row["progress_after_s"] = round(min(progress, done), 1)
        row["drained_after_s"] = round(done, 1)
        row["total_s"] = round(time.monotonic() - t0, 1)
        during = rig.call_codes(window.start) - rig.call_codes(window.end + row["serving_after_s"])
        row["probe_calls"] = dict(rig.call_codes())
        row["probe_errors_during_fault"] = {k: v for k, v in during.items() if k != "OK"}
        row["dead_letters"] = rig.dead_letters()
        if topology == "all":
            row["tenancy"] = cross_tenant(rig, workload)
    finally:
        rig.stop()
    result = await audit(rig.store_dir, workload.expected)
    row.update(result.summary())
    row["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    row["load"] = os.getloadavg()[0]
    record(row)
    return row


def record(row: dict[str, Any]) -> None:
    results = Path(os.environ.get("MMSEARCH_FAULTS_RESULTS", ROOT / ".run" / "faults" / "results.jsonl"))
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as out:
        out.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))
