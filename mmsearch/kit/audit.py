"""The audit trail: who did what to which target, with what result, under which trace.

One entry per audited RPC (the components declare which, with an `AuditSpec`
next to each method's role) and per refused caller on any RPC
(UNAUTHENTICATED, PERMISSION_DENIED). An entry holds the caller, tenant, action
(the full method), kind (admin / read), target (names and ids only: a space, an
alias, a job; never content, a query or a filter's values), result count, status
code and trace id. Written by the policy interceptor, so no RPC can skip it.

Sinks: a structured log line (logger `mmsearch.audit`, event `audit`) and,
when MMSEARCH_AUDIT_TOPIC is set, a durable Kafka topic (JSON, acks=all,
keyed by tenant). The Kafka sink sends from a thread through a bounded queue:
a slow or absent broker never slows an RPC; entries it had to drop are counted
(`mmsearch_audit_dropped_total`) and still in the log.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter

from mmsearch.kit.logging import get_logger

AuditKind = Literal["admin", "read", "denied"]
MAX_TARGET_CHARS = 256
log = get_logger(__name__)
audit_log = get_logger("mmsearch.audit")


@dataclass(frozen=True)
class AuditSpec:
    """How one RPC is audited: its kind, its target from the request (names and ids
    only, never content) and its result count from the response."""

    kind: AuditKind
    target: Callable[[Any], str] = lambda _request: ""
    count: Callable[[Any], int] | None = None


@dataclass(frozen=True)
class AuditEntry:
    time: str
    action: str
    kind: AuditKind
    caller: str
    tenant: str
    target: str
    result_count: int | None
    code: str
    trace_id: str

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


class AuditSink(Protocol):
    name: str

    def emit(self, entry: AuditEntry) -> bool:
        """Hand the entry on; False when it had to be dropped."""

    def close(self) -> None: ...


class LogAuditSink:
    name = "log"

    def emit(self, entry: AuditEntry) -> bool:
        audit_log.info("audit", **asdict(entry))
        return True

    def close(self) -> None:
        return None


class KafkaAuditSink:
    """Entries to a Kafka topic, sent by a thread of its own (kafka-python can block
    for a minute waiting on metadata; an RPC must not)."""

    name = "kafka"

    def __init__(self, bootstrap: str, topic: str, *, queue_size: int = 10_000) -> None:
        from kafka import KafkaProducer

        self._topic = topic
        self._queue: queue.Queue[AuditEntry | None] = queue.Queue(maxsize=queue_size)
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=20, retries=5, max_block_ms=10_000
        )
        self._thread = threading.Thread(target=self._run, name="audit-kafka", daemon=True)
        self._thread.start()

    def emit(self, entry: AuditEntry) -> bool:
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            return False
        return True

    def _run(self) -> None:
        while (entry := self._queue.get()) is not None:
            try:
                self._producer.send(self._topic, key=entry.tenant.encode(), value=entry.to_json())
            except Exception:
                log.exception("audit_send_failed", topic=self._topic)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        try:
            self._producer.flush(timeout=10)
        finally:
            self._producer.close(timeout=5)


class AuditTrail:
    def __init__(self, sinks: Sequence[AuditSink], registry: CollectorRegistry) -> None:
        self._sinks = list(sinks)
        self._entries = Counter(
            "mmsearch_audit_entries_total",
            "Audit entries handed to a sink",
            ["sink", "kind"],
            registry=registry,
        )
        self._dropped = Counter(
            "mmsearch_audit_dropped_total", "Audit entries a sink had to drop (queue full)", ["sink"],
            registry=registry,
        )  # fmt: skip

    def add_sink(self, sink: AuditSink) -> None:
        """One more destination (tests; an embedding application's own sink)."""
        self._sinks.append(sink)

    def record(
        self,
        *,
        action: str,
        kind: AuditKind,
        caller: str,
        tenant: str,
        target: str,
        result_count: int | None,
        code: str,
    ) -> AuditEntry:
        context = trace.get_current_span().get_span_context()
        entry = AuditEntry(
            time=datetime.now(UTC).isoformat(timespec="milliseconds"),
            action=action,
            kind=kind,
            caller=caller,
            tenant=tenant,
            target=target[:MAX_TARGET_CHARS],
            result_count=result_count,
            code=code,
            trace_id=format(context.trace_id, "032x") if context.is_valid else "",
        )
        for sink in self._sinks:
            if sink.emit(entry):
                self._entries.labels(sink.name, kind).inc()
            else:
                self._dropped.labels(sink.name).inc()
        return entry

    def close(self) -> None:
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                log.exception("audit_sink_close_failed", sink=sink.name)


def build_audit_trail(
    registry: CollectorRegistry, *, log_enabled: bool, bootstrap: str, topic: str
) -> AuditTrail:
    sinks: list[AuditSink] = [LogAuditSink()] if log_enabled else []
    if topic:
        if not bootstrap:
            raise ValueError("MMSEARCH_AUDIT_TOPIC is set but MMSEARCH_KAFKA_BOOTSTRAP is empty")
        sinks.append(KafkaAuditSink(bootstrap, topic))
    return AuditTrail(sinks, registry)
