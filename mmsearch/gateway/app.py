"""The ASGI application: the endpoint table routed to the handlers, each request
authenticated, authorized, measured, traced and logged like an RPC; the console's
static files; the OpenAPI document; liveness and readiness."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mmsearch.gateway.endpoints import ENDPOINTS, Endpoint
from mmsearch.gateway.handlers import Call, Gateway
from mmsearch.gateway.openapi import openapi_document
from mmsearch.gateway.problems import HTTP_STATUS, Problem, problem_response
from mmsearch.kit.auth import TokenAuthenticator
from mmsearch.kit.errors import ServiceError
from mmsearch.kit.logging import get_logger
from mmsearch.kit.metrics import LATENCY_BUCKETS

STATIC = Path(__file__).with_name("static")
# The console's files; nothing else under static/ is served.
CONSOLE_FILES = {"console.js": "text/javascript", "console.css": "text/css"}
# The console loads only its own files: no CDN, no inline script, no framing.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
log = get_logger(__name__)


class HttpMetrics:
    """RED metrics per route (the route template, never the raw path: ids would explode labels)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "mmsearch_http_requests_total",
            "HTTP requests answered by the gateway, by status code.",
            ("method", "route", "code"),
            registry=registry,
        )
        self.latency = Histogram(
            "mmsearch_http_request_duration_seconds",
            "Time to answer an HTTP request, from receipt to the response.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "mmsearch_http_in_flight", "HTTP requests being answered now.", registry=registry
        )


def build_app(
    gateway: Gateway,
    authenticator: TokenAuthenticator,
    registry: CollectorRegistry,
    tracer_provider: TracerProvider | None,
    ready: Callable[[], Awaitable[str | None]],
) -> Starlette:
    metrics = HttpMetrics(registry)
    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("mmsearch.gateway")
    document = openapi_document()

    def wrap(
        endpoint: Endpoint, handler: Callable[[Call], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            start = time.perf_counter()
            response: Response | None = None
            metrics.in_flight.inc()
            parent = propagate.extract(dict(request.headers))
            token = otel_context.attach(parent)
            structlog.contextvars.bind_contextvars(http_route=endpoint.path, http_method=endpoint.method)
            try:
                with tracer.start_as_current_span(
                    f"{endpoint.method} {endpoint.path}",
                    kind=SpanKind.SERVER,
                    attributes={"http.request.method": endpoint.method, "http.route": endpoint.path},
                ) as span:
                    response = await _answer(request, endpoint, handler, authenticator)
                    span.set_attribute("http.response.status_code", response.status_code)
                    if response.status_code >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                    context = span.get_span_context()
                    if context.is_valid:  # lets a client quote the trace it was part of
                        response.headers["traceparent"] = (
                            f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
                        )
                    return response
            finally:
                elapsed = time.perf_counter() - start
                status = response.status_code if response is not None else 500
                code = str(status)
                metrics.in_flight.dec()
                metrics.handled.labels(endpoint.method, endpoint.path, code).inc()
                metrics.latency.labels(endpoint.method, endpoint.path).observe(elapsed)
                # Like the services, which log failures only: successes at debug level.
                level = log.debug if status < 400 else log.info if status < 500 else log.warning
                level("http_request", status=code, duration_ms=round(elapsed * 1000, 2))
                structlog.contextvars.unbind_contextvars("http_route", "http_method", "tenant", "caller")
                otel_context.detach(token)

        return run

    routes: list[BaseRoute] = []
    # Item ids may hold slashes (`mmsearch ingest` uses file paths): the id matches them, and
    # the more specific /thumbnail route is tried first.
    for endpoint in sorted(ENDPOINTS, key=lambda e: not e.path.endswith("/thumbnail")):
        handler = getattr(gateway, _snake(endpoint.operation))
        path = endpoint.path.replace("{item_id}", "{item_id:path}")
        routes.append(Route(path, wrap(endpoint, handler), methods=[endpoint.method]))

    async def openapi(_: Request) -> Response:
        return JSONResponse(document)

    async def console(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=SECURITY_HEADERS)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in CONSOLE_FILES:
            return problem_response(Problem(404, f"no console file {name!r}"), request.url.path)
        return FileResponse(STATIC / name, media_type=CONSOLE_FILES[name], headers=SECURITY_HEADERS)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        reason = await ready()
        if reason is None:
            return JSONResponse({"status": "ready"})
        return problem_response(Problem(503, reason), request.url.path)

    routes += [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/", console, methods=["GET"]),
        Route("/console/{name}", static, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    origins = [o.strip() for o in gateway.settings.gateway_cors_origins.split(",") if o.strip()]
    middleware = (
        [
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["authorization", "content-type", "traceparent"],
            )
        ]
        if origins
        else []
    )
    app = Starlette(
        routes=routes, middleware=middleware, exception_handlers={404: _not_found, 405: _not_allowed}
    )
    return app


async def _answer(
    request: Request,
    endpoint: Endpoint,
    handler: Callable[[Call], Awaitable[Response]],
    authenticator: TokenAuthenticator,
) -> Response:
    context = trace.get_current_span().get_span_context()
    trace_id = f"{context.trace_id:032x}" if context.is_valid else ""
    try:
        # Before the body is read: an unauthenticated upload is refused unread.
        header = request.headers.get("authorization")
        principal = authenticator.authenticate([("authorization", header)] if header is not None else [])
        principal.require(endpoint.role)
        structlog.contextvars.bind_contextvars(tenant=principal.tenant, caller=principal.name)
        token = (header or "").strip().partition(" ")[2].strip()
        return await handler(Call(request, principal, token))
    except Problem as problem:
        if problem.status >= 500:
            log.warning("http_problem", status=problem.status, detail=problem.detail)
        return problem_response(problem, request.url.path, trace_id)
    except ServiceError as error:  # Unauthenticated, PermissionDenied from the kit's auth
        denied = Problem(HTTP_STATUS.get(error.code, 500), error.message, error.code)
        return problem_response(denied, request.url.path, trace_id)
    except Exception:
        log.exception("http_internal_error")
        return problem_response(Problem(500, "internal error"), request.url.path, trace_id)


async def _not_found(request: Request, _: Any) -> Response:
    return problem_response(Problem(404, f"no endpoint {request.url.path}"), request.url.path)


async def _not_allowed(request: Request, _: Any) -> Response:
    return problem_response(
        Problem(405, f"{request.method} is not allowed on {request.url.path}"), request.url.path
    )


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
