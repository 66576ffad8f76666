"""Readiness that means it: the gRPC health service reports a service SERVING
only while its dependency checks pass (e.g. Triton has the model loaded).

Each gRPC service registers async checks; a loop probes them every interval.
Only probes change health, with hysteresis: a service turns NOT_SERVING after
FAIL_THRESHOLD failed probes in a row and SERVING again after PASS_THRESHOLD
passes in a row, so a dependency that flickers does not make health flap. A
handler that sees a dependency fail only asks for an early probe: what a
caller sends (a huge image that times out a model, say) can never change
health by itself. The overall status ("") is SERVING when every implemented
service is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from mmsearch.kit.logging import get_logger
from mmsearch.kit.metrics import DependencyMetrics

# A check returns None when ready, else why not.
Check = Callable[[], Awaitable[str | None]]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CHECK_TIMEOUT_S = 2.0
FAIL_THRESHOLD = 2
PASS_THRESHOLD = 2
RECHECK_S = 0.5
# Health name for liveness probes: SERVING from start-up until shutdown, whatever the
# dependencies say, so a liveness probe restarts a process whose event loop no longer
# answers, never one that waits for Triton or the store (readiness does that).
LIVENESS_SERVICE = "mmsearch.liveness"

log = get_logger(__name__)


@dataclass
class _Entry:
    checks: list[Check]
    implemented: bool
    ready: bool = False
    reason: str = "not probed yet"
    probed: bool = False
    # Consecutive probes that disagree with `ready` (hysteresis).
    streak: int = 0


class Readiness:
    def __init__(self, servicer: HealthServicer, metrics: DependencyMetrics, interval_s: float) -> None:
        self.servicer = servicer
        self._metrics = metrics
        self._interval = interval_s
        self._entries: dict[str, _Entry] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._shutting_down = False

    def register(self, service: str, checks: list[Check], *, implemented: bool = True) -> None:
        entry = _Entry(checks=list(checks), implemented=implemented)
        if not implemented:
            entry.reason = "not implemented yet"
        self._entries[service] = entry

    def snapshot(self) -> dict[str, tuple[bool, str]]:
        return {name: (e.ready, e.reason) for name, e in self._entries.items()}

    def report_unavailable(self, service: str, reason: str) -> None:
        """A handler saw a dependency fail: probe again soon. Only the probe decides."""
        if service in self._entries:
            self._wake.set()

    async def refresh(self) -> None:
        if self._shutting_down:
            return
        for name, entry in self._entries.items():
            if not entry.implemented:
                entry.ready, entry.reason = False, "not implemented yet"
                continue
            reason = await self._run_checks(entry.checks)
            was_ready = entry.ready
            passed = reason is None
            if passed == entry.ready:
                entry.streak = 0
                entry.reason = reason or "ok"
            else:
                entry.streak += 1
                threshold = PASS_THRESHOLD if passed else FAIL_THRESHOLD
                # The first probe decides at once: start-up should not wait for a streak.
                if not entry.probed or entry.streak >= threshold:
                    entry.ready, entry.reason, entry.streak = passed, reason or "ok", 0
            entry.probed = True
            if was_ready != entry.ready:
                (log.info if entry.ready else log.warning)(
                    "service_ready" if entry.ready else "service_not_ready",
                    grpc_service=name,
                    reason=entry.reason,
                )
        await self._publish()

    async def _run_checks(self, checks: list[Check]) -> str | None:
        for check in checks:
            try:
                reason = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
            except TimeoutError:
                reason = f"readiness check timed out after {CHECK_TIMEOUT_S}s"
            except Exception as exc:  # a failing probe means not ready, never a crash
                reason = f"readiness check failed: {exc!r}"
            if reason is not None:
                return reason
        return None

    def _overall(self) -> bool:
        implemented = [e for e in self._entries.values() if e.implemented]
        return bool(implemented) and all(e.ready for e in implemented)

    async def _publish(self) -> None:
        if self._shutting_down:
            return
        for name, entry in self._entries.items():
            if entry.implemented:
                self._metrics.up.labels(name).set(1 if entry.ready else 0)
            await self.servicer.set(name, SERVING if entry.ready else NOT_SERVING)
        await self.servicer.set("", SERVING if self._overall() else NOT_SERVING)

    async def _loop(self) -> None:
        # Checked as well as cancelled: on 3.11, asyncio.wait_for can swallow a
        # cancellation that arrives as its inner call completes.
        while not self._shutting_down:
            await self.refresh()
            # A change in progress (a streak) is confirmed quickly, not an interval later.
            unsettled = any(e.streak for e in self._entries.values())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RECHECK_S if unsettled else self._interval)
            if self._wake.is_set():
                self._wake.clear()
                # A dependency just failed: give it a moment before probing again.
                await asyncio.sleep(min(RECHECK_S, self._interval))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="readiness")

    async def shutdown(self) -> None:
        """Stop probing and report NOT_SERVING for everything (graceful shutdown)."""
        self._shutting_down = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for entry in self._entries.values():
            entry.ready, entry.reason = False, "shutting down"
        await self.servicer.enter_graceful_shutdown()
