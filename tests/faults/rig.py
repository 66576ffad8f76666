"""The system under fault: a durable broker (Tansu over S3), tritonserver and mmsearch,
as one process (`--target all`) or split (`embedder`, `reranker`, `indexer` processes),
with a delay proxy in front of Triton and of the broker. Probes run in threads meanwhile:
health and indexer progress every 0.25 s, and a client call (Search, or Embed when no
searcher runs) every 0.25 s whose status codes are counted."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import grpc

from mmsearch.clients.connect import DEV_TOKEN, auth_metadata, health_status
from mmsearch.dev.broker import CONTENT_TOPIC, DLQ_TOPIC
from mmsearch.dev.harness import (
    ALL_MODELS,
    DurableBroker,
    ServiceProcess,
    TritonServer,
    service_settings,
    start_durable_broker_server,
    start_service_process,
    start_triton_server,
)
from mmsearch.dev.processes import free_port, group_members
from mmsearch.dev.proxy import DelayProxy
from mmsearch.producer import ContentProducer
from mmsearch.v1 import (
    common_pb2,
    embedder_pb2,
    embedder_pb2_grpc,
    indexer_pb2,
    indexer_pb2_grpc,
    searcher_pb2,
    searcher_pb2_grpc,
)

Topology = Literal["all", "split"]
AUTH = auth_metadata(DEV_TOKEN)


@dataclass
class Sample:
    t: float
    serving: bool
    committed: int | None  # content-topic offsets committed, None when GetStatus failed
    done: bool


@dataclass
class Rig:
    work_dir: Path
    topology: Topology
    broker: DurableBroker
    broker_proxy: DelayProxy
    triton: TritonServer
    triton_proxy: DelayProxy
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    settings: dict[str, dict[str, str]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    calls: list[tuple[float, str]] = field(default_factory=list)
    published: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    # -- processes ---------------------------------------------------------------------------

    @property
    def indexer(self) -> str:
        return "all" if self.topology == "all" else "indexer"

    @property
    def store_dir(self) -> Path:
        return self.work_dir / "store"

    def addr(self, name: str) -> str:
        return f"127.0.0.1:{self.settings[name]['MMSEARCH_GRPC_PORT']}"

    def start_service(self, name: str) -> float:
        """Start (or restart) a service process; seconds until it was SERVING."""
        started = time.monotonic()
        log_dir = self.work_dir / name
        log_dir.mkdir(exist_ok=True)
        self.services[name], _ = start_service_process(
            log_dir, self.settings[name], target=name, timeout_s=180
        )
        return time.monotonic() - started

    def kill_service(self, name: str) -> None:
        process = self.services[name].process
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def triton_stubs(self) -> list[int]:
        return [pid for pid in group_members(self.triton.pid) if pid != self.triton.pid]

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        for name in reversed(list(self.services)):
            self.services[name].stop()
        self.triton.stop()
        self.broker.stop()
        self.triton_proxy.close()
        self.broker_proxy.close()

    # -- workload and probes -----------------------------------------------------------------

    def publish(self, events: list) -> None:  # type: ignore[type-arg]
        with ContentProducer(self.broker.bootstrap, CONTENT_TOPIC) as producer:
            for event in events:
                producer.publish(event)
        self.published = len(events)

    def status(self, timeout_s: float = 2.0) -> indexer_pb2.GetStatusResponse | None:
        try:
            with grpc.insecure_channel(self.addr(self.indexer)) as channel:
                return indexer_pb2_grpc.IndexerAdminStub(channel).GetStatus(
                    indexer_pb2.GetStatusRequest(), metadata=AUTH, timeout=timeout_s
                )
        except grpc.RpcError:
            return None

    def finished(self, status: indexer_pb2.GetStatusResponse | None) -> bool:
        """Every content event committed, and nothing left for the enrichment stage."""
        if status is None or not status.partitions:
            return False
        content = [p for p in status.partitions if p.topic == CONTENT_TOPIC]
        return sum(p.committed_offset for p in content) >= self.published and all(
            p.lag == 0 for p in status.partitions
        )

    def start_probes(self) -> None:
        for target in (self._sample_loop, self._call_loop):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _sample_loop(self) -> None:
        while not self._stop.is_set():
            serving = health_status(self.addr(self.indexer), "", 0.5) == "SERVING"
            status = self.status(1.0)
            committed = (
                sum(p.committed_offset for p in status.partitions if p.topic == CONTENT_TOPIC)
                if status is not None
                else None
            )
            self.samples.append(Sample(time.monotonic(), serving, committed, self.finished(status)))
            self._stop.wait(0.25)

    def _call_loop(self) -> None:
        name = "all" if self.topology == "all" else "embedder"
        query = common_pb2.Content(text="how do I read a file line by line")
        while not self._stop.is_set():
            code = "OK"
            try:
                with grpc.insecure_channel(self.addr(name)) as channel:
                    if self.topology == "all":
                        searcher_pb2_grpc.SearcherStub(channel).Search(
                            searcher_pb2.SearchRequest(query=query, top_k=5), metadata=AUTH, timeout=2.0
                        )
                    else:
                        embedder_pb2_grpc.EmbedderStub(channel).Embed(
                            embedder_pb2.EmbedRequest(items=[query]), metadata=AUTH, timeout=2.0
                        )
            except grpc.RpcError as exc:
                code = exc.code().name if exc.code() is not None else "UNKNOWN"
            self.calls.append((time.monotonic(), code))
            self._stop.wait(0.25)

    # -- measurements ------------------------------------------------------------------------

    def wait(self, predicate_name: str, timeout_s: float, since: float | None = None) -> float:
        """Block until the probes see `serving`, `progress` (committed offsets grew past their
        value at `since`) or `done`; seconds from `since` (default: now)."""
        start = since if since is not None else time.monotonic()
        base = self.committed_at(start)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for sample in [s for s in self.samples if s.t >= start]:
                hit = {
                    "serving": sample.serving,
                    "progress": sample.committed is not None and sample.committed > base,
                    "done": sample.done,
                }[predicate_name]
                if hit:
                    return sample.t - start
            time.sleep(0.1)
        raise TimeoutError(f"{predicate_name} not seen within {timeout_s:.0f}s (last: {self.samples[-1:]})")

    def committed_at(self, t: float) -> int:
        before = [s.committed for s in self.samples if s.t <= t and s.committed is not None]
        return before[-1] if before else 0

    def wait_committed(self, fraction: float, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.committed_at(time.monotonic()) >= fraction * self.published:
                return
            time.sleep(0.1)
        raise TimeoutError(f"never reached {fraction:.0%} committed")

    def call_codes(self, since: float = 0.0) -> Counter[str]:
        return Counter(code for t, code in self.calls if t >= since)

    def dead_letters(self) -> int:
        """Records in the DLQ topic (the events are all valid: any is a loss)."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.broker.bootstrap, enable_auto_commit=False)
        try:
            partitions = [
                TopicPartition(DLQ_TOPIC, p) for p in consumer.partitions_for_topic(DLQ_TOPIC) or ()
            ]
            consumer.assign(partitions)
            consumer.seek_to_beginning()
            return len([r for batch in consumer.poll(timeout_ms=3000).values() for r in batch])
        finally:
            consumer.close()


def start_rig(work_dir: Path, topology: Topology) -> Rig:
    """Everything on free loopback ports; services SERVING when it returns."""
    work_dir.mkdir(parents=True, exist_ok=True)
    broker_listen = free_port()
    broker_proxy = DelayProxy(broker_listen)
    broker = start_durable_broker_server(
        work_dir, advertised_port=broker_proxy.port, listen_port=broker_listen
    )
    triton: TritonServer | None = None
    triton_proxy: DelayProxy | None = None
    try:
        triton = start_triton_server(work_dir, ALL_MODELS, timeout_s=180)
        triton_proxy = DelayProxy(triton.ports.grpc)
        rig = Rig(work_dir, topology, broker, broker_proxy, triton, triton_proxy)
        common = {
            "MMSEARCH_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "MMSEARCH_INDEXER_BATCH_SIZE": "32",
            "MMSEARCH_READINESS_INTERVAL_S": "0.5",
            "MMSEARCH_LOG_LEVEL": "WARNING",
        }
        names = ["all"] if topology == "all" else ["embedder", "reranker", "indexer"]
        for name in names:
            rig.settings[name] = {
                **service_settings(
                    work_dir,
                    grpc_port=free_port(),
                    metrics_port=free_port(),
                    triton_url=triton_proxy.addr,
                    bootstrap=broker.bootstrap,
                ),
                **common,
            }
        if topology == "split":
            rig.settings["indexer"].update(
                MMSEARCH_INDEXER_EMBEDDER_ADDR=rig.addr("embedder"),
                MMSEARCH_INDEXER_RERANKER_ADDR=rig.addr("reranker"),
            )
        for name in names:
            rig.start_service(name)
        return rig
    except BaseException:
        for name in ("all", "indexer", "reranker", "embedder"):
            if "rig" in locals() and name in rig.services:
                rig.services[name].stop()
        if triton is not None:
            triton.stop()
        if triton_proxy is not None:
            triton_proxy.close()
        broker.stop()
        broker_proxy.close()
        raise
