"""Re-embedding without downtime: fill a new space version's (shadow)
collection by replaying the content topic from the beginning with a new
consumer group, report progress, and when it has caught up swap the source's
aliases to it in the store; searches keep being served from the old
collection until the swap, and from the new one after it (SpaceResolver).

After the swap the live consumer resolves the aliases to the new space too;
the job keeps consuming for a short grace period so that events the live
consumer applied to the old collection just before the swap also reach the
new one (replays are idempotent).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from mmsearch.clients.embedder import EmbedderClient
from mmsearch.clients.spaces import SpaceInfo
from mmsearch.indexer.consumer import ConsumerConfig, IndexerConsumer
from mmsearch.indexer.metrics import IndexerMetrics
from mmsearch.indexer.pipeline import Pipeline
from mmsearch.kit.errors import FailedPrecondition, InvalidArgument, NotFound
from mmsearch.stores.base import Collection, VectorStore, collection_name
from mmsearch.v1 import indexer_pb2

log = structlog.get_logger(__name__)
State = indexer_pb2.ReembedJob.State
SWAP_GRACE_S = 5.0
ALIASES = ("default", "text", "image", "audio")
POLL_S = 0.5


@dataclass
class Job:
    id: str
    source: SpaceInfo
    target: SpaceInfo
    aliases: list[str]
    auto_swap: bool
    consumer: IndexerConsumer
    state: State.ValueType = indexer_pb2.ReembedJob.STATE_REPLAYING
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    error: str = ""
    task: asyncio.Task[None] | None = None

    def proto(self) -> indexer_pb2.ReembedJob:
        state = self.consumer.state
        lag = sum(max(0, hw - state.committed.get(key, 0)) for key, hw in state.highwater.items())
        job = indexer_pb2.ReembedJob(
            job_id=self.id,
            source=self.source.id,
            target_space=self.target.id,
            state=self.state,
            consumer_group=self.consumer.config.group_id,
            events_applied=self.consumer.state.applied,
            lag=lag,
            error=self.error,
        )
        job.started_at.CopyFrom(_ts(self.started_at))
        if self.finished_at is not None:
            job.finished_at.CopyFrom(_ts(self.finished_at))
        return job


def _ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


class ReembedManager:
    def __init__(
        self,
        config: ConsumerConfig,
        embedder: EmbedderClient,
        store: VectorStore,
        metrics: IndexerMetrics,
        pipeline_for: Callable[[tuple[str, SpaceInfo]], Pipeline],
    ) -> None:
        """`pipeline_for(redirect)` builds the job's pipeline, configured like the live one."""
        self._config = config
        self._embedder = embedder
        self._store = store
        self._metrics = metrics
        self._pipeline_for = pipeline_for
        self.jobs: dict[str, Job] = {}

    async def start(self, source_name: str, target_name: str, auto_swap: bool) -> Job:
        if "@" not in target_name:
            raise InvalidArgument("target_space must be 'name@version'", field="target_space")
        source = await self._embedder.resolve_space(source_name or "default")
        target = await self._embedder.resolve_space(target_name)
        if source is None:
            raise NotFound(f"unknown source space {source_name!r}")
        if target is None:
            raise NotFound(f"unknown target space {target_name!r}: add it to the embedder's spaces first")
        if source.id == target.id or not source.modalities <= target.modalities:
            modalities = sorted(source.modalities)
            raise FailedPrecondition(f"{target.id} must differ from {source.id} and accept {modalities}")
        if any(j.target.id == target.id and j.state == State.STATE_REPLAYING for j in self.jobs.values()):
            raise FailedPrecondition(f"a re-embed into {target.id} is already running")
        aliases = [a for a, s in (await self._alias_map()).items() if s.id == source.id]
        job_id = uuid.uuid4().hex[:12]
        config = ConsumerConfig(
            **{
                **self._config.__dict__,
                "group_id": f"{self._config.group_id}.reembed.{target.id}.{job_id}",
                "dead_letter": False,
            }
        )
        pipeline = self._pipeline_for((source.id, target))
        job = Job(
            job_id, source, target, aliases, auto_swap, IndexerConsumer(config, pipeline, self._metrics)
        )
        job.task = asyncio.get_running_loop().create_task(self._run(job), name=f"reembed-{job_id}")
        self.jobs[job_id] = job
        log.info("reembed_started", job=job_id, source=source.id, target=target.id, aliases=aliases)
        return job

    async def _alias_map(self) -> dict[str, SpaceInfo]:
        """The embedder's aliases and the space each names."""
        result = {}
        for name in ALIASES:
            space = await self._embedder.resolve_space(name)
            if space is not None:
                result[name] = space
        return result

    async def _run(self, job: Job) -> None:
        consumer_task = asyncio.get_running_loop().create_task(job.consumer.run())
        try:
            await self._until_caught_up(job)
            job.state = State.STATE_CAUGHT_UP
            log.info("reembed_caught_up", job=job.id, applied=job.consumer.state.applied)
            if job.auto_swap:
                await self.swap(job)
                await asyncio.sleep(SWAP_GRACE_S)
                await self._until_caught_up(job)
        except Exception as exc:  # a failed job is reported, never crashes the indexer
            job.state, job.error = State.STATE_FAILED, str(exc)
            log.exception("reembed_failed", job=job.id)
        finally:
            await job.consumer.stop()
            await consumer_task
            await job.consumer.close()
            job.finished_at = datetime.now(UTC)

    async def _until_caught_up(self, job: Job) -> None:
        state = job.consumer.state
        while True:
            if state.highwater and all(state.committed.get(k, 0) >= hw for k, hw in state.highwater.items()):
                return
            await asyncio.sleep(POLL_S)

    async def swap(self, job: Job) -> None:
        target = collection_name(job.target.id)
        if await self._store.resolve(target) != target:
            # Nothing was indexed into the target (empty topic): create it so the alias has a home.
            await self._store.ensure_collection(
                Collection(target, job.target.id, job.target.dimension, quantization=job.target.quantization)
            )
        for alias in job.aliases:
            await self._store.set_alias(alias, target)
        job.state = State.STATE_SWAPPED
        log.info("reembed_swapped", job=job.id, aliases=job.aliases, collection=target, at=time.time())

    async def stop(self) -> None:
        for job in self.jobs.values():
            if job.task is not None and not job.task.done():
                await job.consumer.stop()
                await job.task
