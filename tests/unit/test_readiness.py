"""Health with hysteresis: a flickering dependency does not make health flap,
and what a caller sends (reported as UNAVAILABLE by a handler) never changes
health by itself: only probes do."""

from __future__ import annotations

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from prometheus_client import CollectorRegistry

from mmsearch.kit.health import FAIL_THRESHOLD, PASS_THRESHOLD, Readiness
from mmsearch.kit.metrics import DependencyMetrics

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Dependency:
    def __init__(self) -> None:
        self.up = True

    async def check(self) -> str | None:
        return None if self.up else "model server down"


async def status(servicer: HealthServicer, service: str) -> int:
    response = await servicer.Check(health_pb2.HealthCheckRequest(service=service), None)  # type: ignore[arg-type]
    return int(response.status)


async def readiness() -> tuple[Readiness, HealthServicer, Dependency]:
    servicer = HealthServicer()
    dependency = Dependency()
    ready = Readiness(servicer, DependencyMetrics(CollectorRegistry()), interval_s=60)
    ready.register("svc", [dependency.check])
    await ready.refresh()
    return ready, servicer, dependency


async def test_a_single_failed_probe_does_not_flip_health() -> None:
    ready, servicer, dependency = await readiness()
    assert await status(servicer, "svc") == SERVING
    dependency.up = False
    for _ in range(FAIL_THRESHOLD - 1):
        await ready.refresh()
        assert await status(servicer, "svc") == SERVING
    await ready.refresh()
    assert await status(servicer, "svc") == NOT_SERVING and await status(servicer, "") == NOT_SERVING


async def test_recovery_needs_consecutive_passes() -> None:
    ready, servicer, dependency = await readiness()
    dependency.up = False
    for _ in range(FAIL_THRESHOLD):
        await ready.refresh()
    dependency.up = True
    for _ in range(PASS_THRESHOLD - 1):
        await ready.refresh()
        assert await status(servicer, "svc") == NOT_SERVING
    dependency.up = False
    await ready.refresh()  # a flicker resets the streak
    dependency.up = True
    for _ in range(PASS_THRESHOLD - 1):
        await ready.refresh()
    assert await status(servicer, "svc") == NOT_SERVING
    await ready.refresh()
    assert await status(servicer, "svc") == SERVING


async def test_a_handler_reporting_unavailable_does_not_change_health() -> None:
    ready, servicer, _ = await readiness()
    for _ in range(10):
        ready.report_unavailable("svc", "embedder: DEADLINE_EXCEEDED on a 50-megapixel image")
    assert await status(servicer, "svc") == SERVING
    await ready.refresh()  # the early probe finds the dependency fine
    assert await status(servicer, "svc") == SERVING
