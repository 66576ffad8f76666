"""The Kafka side of the indexer: poll a batch, run the pipeline, dead-letter
what must be, then commit — in that order, so an offset is committed only
after its effect is durable in the store and its dead letters are acked.

A dependency failure (embedder, store, DLQ produce) pauses the assigned
partitions, seeks back to the batch's first offsets, waits with capped
exponential backoff, and tries the same records again: nothing is committed
and nothing is lost. Processing happens between polls, so a rebalance never
interrupts a batch half-way; a commit refused after a rebalance only means the
new owner replays the batch, which changes nothing (idempotent upserts).

kafka-python is blocking: its calls run in a worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from opentelemetry import propagate, trace

from mmsearch.clients.errors import DependencyDown, DependencyError
from mmsearch.indexer.batch import REASON, BatchResult, Record, dead_letter, fit
from mmsearch.indexer.letters import RecentLetters
from mmsearch.indexer.metrics import IndexerMetrics
from mmsearch.indexer.ocr import task_headers
from mmsearch.v1 import events_pb2

log = structlog.get_logger(__name__)
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
# Failures of one batch with a dependency error (not "down") before its records are tried alone.
ISOLATE_AFTER = 3
# Room for the DLQ record's key, headers and Kafka's framing within the size limit.
DLQ_RECORD_OVERHEAD = 4096
# Between two polls (one batch's work) before the group gives the partitions away.
MAX_POLL_INTERVAL_MS = 1_800_000
# The longest a held consumer (the enrichment stage while ingest has lag) waits in a row
# before one batch runs anyway, so enrichment cannot starve under a long ingest.
MAX_HOLD_S = 120.0
# A consumer that finished a batch this recently counts as busy even at zero lag: between its
# commit and its next poll, the highwater it knows is the offset it just committed.
BUSY_GRACE_S = 3.0


class Processor(Protocol):
    """What the consumer runs on each batch: the pipeline, or the enrichment stage."""

    async def process(self, records: Sequence[Record]) -> BatchResult: ...


@dataclass(frozen=True)
class ConsumerConfig:
    bootstrap: str
    topic: str
    dlq_topic: str
    group_id: str
    batch_size: int = 256
    # False for a re-embed replay: the live consumer already dead-lettered those records.
    dead_letter: bool = True
    # Where written images go for their OCR text (the enrichment stage); empty: nowhere.
    enrich_topic: str = ""
    poll_timeout_ms: int = 500
    # A dead letter is at most this large (Kafka's default message.max.bytes is 1 MB):
    # a larger original is left out of it, never allowed to block the partition.
    dlq_max_record_bytes: int = 1_000_000
    # The largest record republished to enrich_topic (a document event is republished whole,
    # mmsearch/indexer/document.py): the producer must be allowed to send it.
    max_task_bytes: int = 1_000_000
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000


@dataclass
class ConsumerState:
    paused: bool = False
    pause_reason: str = ""
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    highwater: dict[tuple[str, int], int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    connected: bool = False
    last_error: str = ""
    # Events that changed the store (indexed or deleted), since start.
    applied: int = 0
    # Not fetching because another consumer's work comes first (see IndexerConsumer `hold`).
    holding: bool = False
    # time.monotonic() when the last batch was committed.
    last_batch_at: float = -BUSY_GRACE_S
    # The last dead letters, summarized (IndexerAdmin.ListDeadLetters).
    recent_letters: RecentLetters = field(default_factory=RecentLetters)

    def lag(self) -> int:
        """Records not yet committed, over the assigned partitions last seen."""
        return sum(max(0, high - self.committed.get(tp, high)) for tp, high in self.highwater.items())

    def busy(self) -> bool:
        return self.lag() > 0 or time.monotonic() - self.last_batch_at < BUSY_GRACE_S


def _headers(headers: Any) -> tuple[tuple[str, bytes], ...]:
    return tuple((str(k), bytes(v or b"")) for k, v in headers or ())


class IndexerConsumer:
    def __init__(
        self,
        config: ConsumerConfig,
        pipeline: Processor,
        metrics: IndexerMetrics,
        tracer_provider: trace.TracerProvider | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        *,
        hold: Callable[[], bool] | None = None,
        max_hold_s: float = MAX_HOLD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`hold()`: while true, this consumer does not fetch (its partitions are paused and
        polled, so it stays in its group) and leaves the cores to other work: the enrichment
        stage holds while the live consumer has lag. At most `max_hold_s` in a row; then one
        batch runs and the hold starts again."""
        self.config = config
        self.state = ConsumerState()
        self._pipeline = pipeline
        self._metrics = metrics
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self._sleep = sleep
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._stopping = asyncio.Event()
        self._hold = hold
        self._max_hold_s = max_hold_s
        self._clock = clock
        self._held_since: float | None = None

    # --- lifecycle -------------------------------------------------------
    async def _connect(self) -> None:
        def connect() -> tuple[KafkaConsumer, KafkaProducer]:
            consumer = KafkaConsumer(
                self.config.topic,
                bootstrap_servers=self.config.bootstrap,
                group_id=self.config.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.config.batch_size,
                session_timeout_ms=self.config.session_timeout_ms,
                heartbeat_interval_ms=self.config.heartbeat_interval_ms,
                # A batch of 256 long documents on a loaded machine outlasted the default 300 s
                # between polls: the consumer was dropped, its commit failed and the batch started
                # over, forever. Liveness is the heartbeat's job (session timeout), not this.
                max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
                client_id=f"mmsearch-indexer-{self.config.group_id}",
            )
            producer = KafkaProducer(
                bootstrap_servers=self.config.bootstrap,
                acks="all",
                linger_ms=5,
                retries=5,
                # The letter is fitted to dlq_max_record_bytes; key, headers and framing need room.
                # An enrichment task is the original record, up to max_task_bytes.
                max_request_size=max(self.config.dlq_max_record_bytes, self.config.max_task_bytes)
                + DLQ_RECORD_OVERHEAD,
            )
            return consumer, producer

        self._consumer, self._producer = await asyncio.to_thread(connect)
        self.state.connected = True

    async def run(self) -> None:
        """Consume until stop(); reconnects with backoff while the broker is down."""
        backoff = BACKOFF_START_S
        while not self._stopping.is_set():
            try:
                if self._consumer is None:
                    await self._connect()
                    backoff = BACKOFF_START_S
                await self._step()
            except Exception as exc:
                # Never let the loop die silently: report, reconnect, retry with backoff.
                self.state.connected = False
                self.state.last_error = f"{'kafka' if isinstance(exc, KafkaError) else 'error'}: {exc}"
                if isinstance(exc, KafkaError):
                    log.warning("indexer_kafka_error", error=str(exc), retry_in_s=backoff)
                else:
                    log.exception("indexer_loop_error", retry_in_s=backoff)
                await self._close_clients()
                await self._wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        await self._close_clients()

    async def _close_clients(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        if consumer is not None:
            await asyncio.to_thread(consumer.close, autocommit=False)
        if producer is not None:
            await asyncio.to_thread(producer.close, 5)

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # --- one batch -------------------------------------------------------
    def holding(self) -> bool:
        """Whether this step yields (see `hold`); a hold past max_hold_s lets one batch run."""
        if self._hold is None or not self._hold():
            self._held_since = None
            return False
        now = self._clock()
        if self._held_since is None:
            self._held_since = now
        if now - self._held_since >= self._max_hold_s:
            self._held_since = None
            return False
        return True

    async def _step(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        if self.holding():
            if not self.state.holding:
                await asyncio.to_thread(lambda: consumer.pause(*consumer.assignment()))
                self.state.holding = True
            # Polling paused partitions returns nothing but keeps the group membership.
            await asyncio.to_thread(consumer.poll, timeout_ms=self.config.poll_timeout_ms)
            await asyncio.to_thread(self._update_lag)
            return
        if self.state.holding:
            await asyncio.to_thread(lambda: consumer.resume(*consumer.paused()))
            self.state.holding = False
        polled = await asyncio.to_thread(
            self._consumer.poll, timeout_ms=self.config.poll_timeout_ms, max_records=self.config.batch_size
        )
        await asyncio.to_thread(self._update_lag)
        if not polled:
            return
        records = [
            Record(m.topic, m.partition, m.offset, m.key, m.value, _headers(m.headers), m.timestamp or 0)
            for tp in sorted(polled, key=lambda t: (t.topic, t.partition))
            for m in polled[tp]
        ]
        self._metrics.batch_records.observe(len(records))
        backoff = BACKOFF_START_S
        failures = 0
        while True:
            try:
                if failures >= ISOLATE_AFTER and len(records) > 1:
                    result = await self._isolate(records)
                else:
                    result = await self._process(records)
                await self._dead_letter(result)
                break
            except KafkaError:
                raise
            except Exception as exc:
                # A dependency that answers with an error (not "down"), or a bug, on the same
                # batch again and again may be failing on one record: isolate it next time.
                if not isinstance(exc, DependencyError):
                    log.exception("indexer_batch_failed", records=len(records))
                failures = failures + 1 if not isinstance(exc, DependencyDown) else 0
                await self._pause(records, f"{type(exc).__name__}: {exc}", backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                if self._stopping.is_set():
                    return
        await self._commit(records)
        self._account(result)

    async def _isolate(self, records: list[Record]) -> BatchResult:
        """Each record alone: one the dependency fails on while its neighbours
        succeed is dead-lettered (REASON_UNPROCESSABLE) so it cannot pin the
        partition. If every record fails alone, the dependency is broken, not the
        records: raise, and the batch waits (a bad deploy must not empty a topic
        into the DLQ)."""
        result = BatchResult()
        failed: list[tuple[Record, Exception]] = []
        for record in records:
            try:
                result.merge(await self._process([record]))
            except (DependencyDown, KafkaError):
                raise
            except Exception as exc:
                failed.append((record, exc))
        if len(failed) == len(records):
            raise failed[0][1]
        for record, error in failed:
            log.warning("indexer_record_isolated", offset=record.offset, error=str(error))
            detail = f"{type(error).__name__}: {error}"
            result.dead_letters.append(dead_letter(record, REASON.REASON_UNPROCESSABLE, detail))
        return result

    async def _process(self, records: list[Record]) -> BatchResult:
        # One span per batch, linked to each producer's span (W3C context in the headers).
        links = []
        for record in records:
            context = propagate.extract({k: v.decode("latin-1") for k, v in record.headers})
            span_context = trace.get_current_span(context).get_span_context()
            if span_context.is_valid:
                links.append(trace.Link(span_context))
        with self._tracer.start_as_current_span(
            "indexer.batch", links=links[:128], attributes={"messaging.batch.message_count": len(records)}
        ):
            return await self._pipeline.process(records)

    async def _dead_letter(self, result: BatchResult) -> None:
        """Dead letters and enrichment tasks, acked by the broker before the commit."""
        sends: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
        if self.config.dead_letter:
            for letter in result.dead_letters:
                reason = events_pb2.DeadLetter.Reason.Name(letter.reason).encode()
                value = fit(letter, self.config.dlq_max_record_bytes).SerializeToString()
                headers = [("content-type", b"application/x-protobuf"), ("mmsearch-dlq-reason", reason)]
                sends.append((self.config.dlq_topic, letter.original_key[:1024] or None, value, headers))
        if self.config.enrich_topic:
            for record, space in result.followups:
                sends.append(
                    (self.config.enrich_topic, record.key, record.value or b"", task_headers(record, space))
                )
        if not sends:
            return
        producer = self._producer
        assert producer is not None

        def send_all() -> None:
            futures = [
                producer.send(topic, key=key, value=value, headers=hs) for topic, key, value, hs in sends
            ]
            producer.flush(timeout=10)
            for future in futures:
                future.get(timeout=10)  # raises if the broker did not ack

        try:
            await asyncio.to_thread(send_all)
        except KafkaError as exc:
            raise DependencyDown("broker (dead letters, enrichment tasks)", str(exc)) from exc

    async def _pause(self, records: list[Record], reason: str, backoff: float) -> None:
        """Rewind to the batch's first offsets and hold the partitions while waiting."""
        consumer = self._consumer
        assert consumer is not None
        self.state.paused, self.state.pause_reason = True, reason
        self._metrics.paused.set(1)
        self._metrics.retries.inc()
        log.warning("indexer_paused", reason=reason, retry_in_s=backoff, records=len(records))
        firsts: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            firsts[tp] = min(firsts.get(tp, record.offset), record.offset)

        def rewind_and_pause() -> None:
            assigned = consumer.assignment()
            for tp, offset in firsts.items():
                if tp in assigned:
                    consumer.seek(tp, offset)
            consumer.pause(*assigned)

        await asyncio.to_thread(rewind_and_pause)
        deadline = time.monotonic() + backoff
        while time.monotonic() < deadline and not self._stopping.is_set():
            # Keep polling while paused: it returns nothing but keeps the group membership.
            await asyncio.to_thread(consumer.poll, timeout_ms=100)
            await self._wait(0.1)
        await asyncio.to_thread(lambda: consumer.resume(*consumer.paused()))
        self.state.paused, self.state.pause_reason = False, ""
        self._metrics.paused.set(0)

    async def _commit(self, records: list[Record]) -> None:
        consumer = self._consumer
        assert consumer is not None
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            nxt = record.offset + 1
            if tp not in offsets or offsets[tp].offset < nxt:
                offsets[tp] = OffsetAndMetadata(nxt, "", -1)
        try:
            await asyncio.to_thread(consumer.commit, offsets)
        except CommitFailedError as exc:
            # The group rebalanced: the new owner replays these records; upserts are idempotent.
            log.warning("indexer_commit_refused", error=str(exc))
            return
        for tp, meta in offsets.items():
            self.state.committed[(tp.topic, tp.partition)] = meta.offset

    def _account(self, result: BatchResult) -> None:
        events = self._metrics.events
        events.labels("indexed", "").inc(result.indexed)
        events.labels("deleted", "").inc(result.deleted)
        events.labels("duplicate", "").inc(result.duplicates)
        self.state.applied += result.indexed + result.deleted
        self.state.last_batch_at = time.monotonic()
        for letter in result.dead_letters:
            name = events_pb2.DeadLetter.Reason.Name(letter.reason)
            events.labels("dlq", name).inc()
            self.state.dead_letters[name] = self.state.dead_letters.get(name, 0) + 1
            self.state.recent_letters.add(letter)
        now = datetime.now(UTC)
        for space, event_time in result.applied:
            self._metrics.freshness_seconds.labels(space).observe(
                max(0.0, (now - event_time).total_seconds())
            )

    def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)  # end_offsets() is wrong on Tansu; highwater is exact
            if highwater is None:
                continue
            key = (tp.topic, tp.partition)
            self.state.highwater[key] = highwater
            if key not in self.state.committed:
                self.state.committed[key] = consumer.committed(tp) or 0
            position = self.state.committed[key]
            self._metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))
