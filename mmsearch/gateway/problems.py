"""gRPC status -> HTTP status with an RFC 9457 problem+json body.

The mapping follows Google's HTTP/gRPC table (google.rpc.Code) with one
deliberate change: RESOURCE_EXHAUSTED means "over a configured limit" in
mmsearch (items per batch, pixels, top_k, request bytes), never a rate limit,
so it is 413 rather than 429, which clients would retry in vain.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    499: "Client Closed Request",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Problem(Exception):
    """An HTTP error answered as problem+json; `code` is the gRPC status it stands for."""

    def __init__(self, status: int, detail: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code

    @classmethod
    def from_rpc(cls, error: grpc.aio.AioRpcError) -> Problem:
        code = error.code()
        return cls(HTTP_STATUS.get(code, 500), error.details() or code.name, code)


def problem_response(problem: Problem, instance: str, trace_id: str = "") -> Response:
    code = problem.code.name if problem.code is not None else ""
    body: dict[str, Any] = {
        # A stable, dereference-free identifier per kind of problem (RFC 9457 allows a URN).
        "type": f"urn:mmsearch:problem:{(code or str(problem.status)).lower().replace('_', '-')}",
        "title": TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
    }
    if code:
        body["grpc_status"] = code
    if trace_id:
        body["trace_id"] = trace_id
    headers = {"www-authenticate": 'Bearer realm="mmsearch"'} if problem.status == 401 else None
    return Response(json.dumps(body), status_code=problem.status, media_type=PROBLEM_JSON, headers=headers)
