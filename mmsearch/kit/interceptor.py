"""One server interceptor for every RPC: authentication, RED metrics, error
mapping and request-scoped log context.

It wraps each unary-unary handler rather than stacking three interceptors, so
the handler runs in the same context that holds the caller's identity. Health
and reflection stay public (Kubernetes probes and grpcurl carry no token).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import grpc
import structlog

from mmsearch.kit.audit import AuditSpec, AuditTrail
from mmsearch.kit.auth import Principal, TokenAuthenticator, bind_principal, unbind_principal
from mmsearch.kit.errors import InvalidArgument, PermissionDenied, ServiceError
from mmsearch.kit.logging import get_logger
from mmsearch.kit.metrics import RpcMetrics, split_method, trace_exemplar

PUBLIC_SERVICE_PREFIXES = ("grpc.health.v1.", "grpc.reflection.")
# A status message often quotes the caller's input (an unknown job id, a bad field's value).
# It travels in a trailer, and gRPC clients refuse trailers over 16 KiB (hard limit) with
# RESOURCE_EXHAUSTED, losing the real status: the message is cut well below that.
# Counted in UTF-8 bytes: percent-encoded on the wire, that is at most 3 KiB.
MAX_STATUS_MESSAGE_BYTES = 1024

log = get_logger(__name__)

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
# Turns an exception from below the handlers (a client's or a store's) into the
# status it means; None leaves it INTERNAL. The mapping lives above the kit
# (mmsearch/edge.py): the kit knows neither clients nor stores.
Translate = Callable[[BaseException], ServiceError | None]
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class RpcPolicyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        authenticator: TokenAuthenticator,
        method_roles: Mapping[str, str],
        metrics: RpcMetrics,
        on_unavailable: Callable[[str, str], None] | None = None,
        translate: Translate | None = None,
        *,
        audit: AuditTrail | None = None,
        audit_specs: Mapping[str, AuditSpec] | None = None,
    ) -> None:
        """`method_roles` maps '/pkg.Service/Method' to the role it requires.

        A method missing from the map is denied: new RPCs must declare their role.
        `on_unavailable(service, reason)` hears of every UNAVAILABLE a handler
        raises (a dependency is down) so health can turn NOT_SERVING at once.
        """
        self._auth = authenticator
        self._roles = dict(method_roles)
        self._metrics = metrics
        self._on_unavailable = on_unavailable
        self._translate = translate
        # Audited: the methods with a spec, and every refused caller on any method.
        self._audit = audit
        self._audit_specs = dict(audit_specs or {})

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.lstrip("/").startswith(PUBLIC_SERVICE_PREFIXES):
            return handler
        if handler.unary_unary is None:
            # All mmsearch RPCs are unary; a streaming one must be wrapped here before it ships.
            return handler
        # The request arrives as bytes and is parsed inside the policy (after authentication):
        # bytes gRPC would fail to parse (garbage, a filter nested past protobuf's recursion
        # limit) then answer UNAUTHENTICATED or INVALID_ARGUMENT, not gRPC's bare UNKNOWN.
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(method, cast(Behavior, handler.unary_unary), handler.request_deserializer),
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, method: str, behavior: Behavior, parse: Callable[[bytes], Any] | None = None) -> Behavior:
        service, name = split_method(method)
        role = self._roles.get(method)
        metrics = self._metrics

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            metrics.started.labels("unary", service, name).inc()
            metrics.in_flight.labels(service).inc()
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            principal_token = None
            principal: Principal | None = None
            parsed: Any = None
            response: Any = None
            structlog.contextvars.bind_contextvars(rpc=method)
            try:
                principal = self._auth.authenticate(context.invocation_metadata())
                self._authorize(principal, role, method)
                principal_token = bind_principal(principal)
                structlog.contextvars.bind_contextvars(tenant=principal.tenant, caller=principal.name)
                parsed = _parsed(parse, request) if parse is not None else request
                response = await behavior(parsed, context)
                return response
            except ServiceError as exc:
                code = exc.code
                await self._abort(context, service, exc)
            except asyncio.CancelledError:
                # The client went away or its deadline passed.
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                code = _code_of(context)
                raise
            except Exception as exc:
                mapped = self._translate(exc) if self._translate is not None else None
                if mapped is not None:
                    code = mapped.code
                    await self._abort(context, service, mapped)
                code = grpc.StatusCode.INTERNAL
                log.exception("rpc_internal_error")
                await context.abort(code, "internal error")
            finally:
                self._record(method, principal, parsed, response, code)
                if principal_token is not None:
                    unbind_principal(principal_token)
                structlog.contextvars.unbind_contextvars("rpc", "tenant", "caller")
                metrics.in_flight.labels(service).dec()
                metrics.handled.labels("unary", service, name, code.name).inc()
                metrics.latency.labels("unary", service, name).observe(
                    time.perf_counter() - start, exemplar=trace_exemplar()
                )

        return wrapped

    async def _abort(
        self, context: grpc.aio.ServicerContext[Any, Any], service: str, exc: ServiceError
    ) -> None:
        code = exc.code
        message = bounded(exc.message)
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            # Details (e.g. a model server's raw error) go to the log, not to the caller.
            log.error("rpc_failed", code=code.name, error=message)
            message = "internal error"
        else:
            log.info("rpc_error", code=code.name, error=message)
        if code == grpc.StatusCode.UNAVAILABLE and self._on_unavailable is not None:
            self._on_unavailable(service, exc.message)
        await context.abort(code, message)

    def _record(
        self, method: str, principal: Principal | None, request: Any, response: Any, code: grpc.StatusCode
    ) -> None:
        """The audit entry of one RPC, if it is audited; never fails the RPC."""
        spec = self._audit_specs.get(method)
        denied = code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
        if self._audit is None or (spec is None and not denied):
            return
        try:
            target = spec.target(request) if spec is not None and request is not None else ""
            count = spec.count(response) if spec and spec.count and response is not None else None
            self._audit.record(
                action=method,
                kind="denied" if denied or spec is None else spec.kind,
                caller=principal.name if principal else "",
                tenant=principal.tenant if principal else "",
                target=target,
                result_count=count,
                code=code.name,
            )
        except Exception:
            log.exception("audit_failed", rpc=method)

    @staticmethod
    def _authorize(principal: Principal, role: str | None, method: str) -> None:
        if role is None:
            raise PermissionDenied(f"{method} declares no role")
        principal.require(role)


def bounded(message: str) -> str:
    """`message` cut to MAX_STATUS_MESSAGE_BYTES (UTF-8), saying how much was left out."""
    raw = message.encode("utf-8", "replace")
    if len(raw) <= MAX_STATUS_MESSAGE_BYTES:
        return message
    kept = raw[: MAX_STATUS_MESSAGE_BYTES - 48].decode("utf-8", "ignore")
    return f"{kept}... ({len(raw) - len(kept.encode())} more bytes)"


def _parsed(parse: Callable[[bytes], Any], raw: bytes) -> Any:
    try:
        return parse(raw)
    except Exception as exc:  # DecodeError, RecursionError (nesting past protobuf's limit), ...
        raise InvalidArgument(
            f"the request is not a valid message of this RPC: {type(exc).__name__}"
        ) from exc


def _code_of(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN
