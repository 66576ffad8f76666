"""The OpenAPI 3.1 document, generated from the endpoint table and the protos'
descriptors (bodies are the canonical proto JSON mapping, so the schemas are
the messages' fields by their JSON names), and the check that keeps the HTTP
API from falling behind the protos: every field of every fronted request
message is in the document, and every gRPC method is either fronted or listed
in NOT_EXPOSED with a reason."""

from __future__ import annotations

from typing import Any, cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor

from mmsearch.gateway.endpoints import ENDPOINTS, NOT_EXPOSED, Endpoint
from mmsearch.v1 import embedder_pb2, indexer_pb2, reranker_pb2, searcher_pb2

SERVICE_FILES: tuple[FileDescriptor, ...] = (
    embedder_pb2.DESCRIPTOR,
    searcher_pb2.DESCRIPTOR,
    indexer_pb2.DESCRIPTOR,
    reranker_pb2.DESCRIPTOR,
)
PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details; `grpc_status` names the gRPC status it maps.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "grpc_status": {"type": "string"},
        "trace_id": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}
ERRORS = {
    "400": "INVALID_ARGUMENT (names the field), malformed JSON or multipart, truncated upload",
    "401": "UNAUTHENTICATED: missing or unknown bearer token",
    "403": "PERMISSION_DENIED: the token lacks the endpoint's role",
    "404": "NOT_FOUND",
    "409": "FAILED_PRECONDITION: e.g. a vector or page token of another space",
    "413": "RESOURCE_EXHAUSTED: over a limit (body bytes, items, pixels, top_k)",
    "415": "unsupported upload or content type",
    "503": "UNAVAILABLE: a service or dependency is down; retryable",
    "504": "DEADLINE_EXCEEDED",
}
_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "minimum": 0},
    # 64-bit integers are strings in the canonical JSON mapping (numbers are accepted too).
    FieldDescriptor.TYPE_INT64: {"type": ["string", "integer"], "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_SINT64: {"type": ["string", "integer"], "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_SFIXED64: {"type": ["string", "integer"], "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_UINT64: {"type": ["string", "integer"], "pattern": "^[0-9]+$"},
    FieldDescriptor.TYPE_FIXED64: {"type": ["string", "integer"], "pattern": "^[0-9]+$"},
}
WELL_KNOWN = {"google.protobuf.Timestamp": {"type": "string", "format": "date-time"}}


def schema_name(descriptor: Descriptor | EnumDescriptor) -> str:
    return descriptor.full_name.removeprefix("mmsearch.v1.").replace(".", "_")


class _Schemas:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {"Problem": PROBLEM}

    def ref(self, descriptor: Descriptor | Any) -> dict[str, Any]:
        if descriptor.full_name in WELL_KNOWN:
            return dict(WELL_KNOWN[descriptor.full_name])
        name = schema_name(descriptor)
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder first: messages may be recursive (Filter)
            self.schemas[name] = self._message(descriptor)
        return {"$ref": f"#/components/schemas/{name}"}

    def _enum(self, descriptor: EnumDescriptor) -> dict[str, Any]:
        name = schema_name(descriptor)
        self.schemas.setdefault(name, {"type": "string", "enum": [v.name for v in descriptor.values]})
        return {"$ref": f"#/components/schemas/{name}"}

    def _single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None:
            return self.ref(field.message_type)
        if field.enum_type is not None:
            return self._enum(field.enum_type)
        return dict(_SCALARS[field.type])

    def _field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value)}
        # (`label` is in protobuf 5's runtime, not in the newer type stubs.)
        if cast(Any, field).label == FieldDescriptor.LABEL_REPEATED:
            return {"type": "array", "items": self._single(field)}
        return self._single(field)

    def _message(self, descriptor: Descriptor) -> dict[str, Any]:
        properties = {f.json_name: self._field(f) for f in descriptor.fields}
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        oneofs = [o for o in descriptor.oneofs if not o.name.startswith("_")]  # not proto3 `optional`
        if oneofs:
            schema["description"] = "; ".join(
                f"at most one of {', '.join(f.json_name for f in o.fields)}" for o in oneofs
            )
        return schema


def _operation(endpoint: Endpoint, schemas: _Schemas) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint.operation,
        "summary": endpoint.summary,
        "tags": list(endpoint.tags),
        "security": [{"bearer": []}],
        "parameters": [
            {
                "name": p.name,
                "in": p.where,
                "required": p.where == "path" or p.required,
                "description": p.description,
                "schema": {"type": "string"},
            }
            for p in endpoint.params
        ],
    }
    if endpoint.rpc:
        operation["x-grpc-method"] = endpoint.rpc
        operation["description"] = f"Fronts gRPC `{endpoint.rpc}`; the same request and response."
    if endpoint.body == "json" and endpoint.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.ref(endpoint.request.DESCRIPTOR)}},
        }
    elif endpoint.body == "multipart":
        properties: dict[str, Any] = {}
        encoding: dict[str, Any] = {}
        for part in endpoint.form:
            if part.file:
                single = {"type": "string", "contentMediaType": "application/octet-stream"}
                properties[part.name] = {"type": "array", "items": single} if part.repeated else single
            elif part.message is not None:
                properties[part.name] = schemas.ref(part.message.DESCRIPTOR)
                encoding[part.name] = {"contentType": "application/json"}
            else:
                properties[part.name] = {"type": "string"}
            properties[part.name]["description"] = part.description
        media: dict[str, Any] = {
            "schema": {
                "type": "object",
                "properties": properties,
                "required": [p.name for p in endpoint.form if p.required],
            }
        }
        if encoding:
            media["encoding"] = encoding
        operation["requestBody"] = {"required": True, "content": {"multipart/form-data": media}}
    success: dict[str, Any] = {"description": "OK" if endpoint.status == 200 else "Accepted"}
    if endpoint.response is not None:
        success["content"] = {"application/json": {"schema": schemas.ref(endpoint.response.DESCRIPTOR)}}
    elif endpoint.response_media != "application/json":
        success["content"] = {endpoint.response_media: {"schema": {"type": "string", "format": "binary"}}}
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    operation["responses"] = {
        str(endpoint.status): success,
        **{code: {"description": text, "content": problem} for code, text in ERRORS.items()},
    }
    return operation


def openapi_document(endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mmsearch HTTP/JSON gateway",
            "version": "v1",
            "description": "JSON bodies are the canonical JSON mapping of the mmsearch.v1 protos "
            "(lowerCamelCase names, base64 bytes, enum names, 64-bit integers as strings).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def grpc_methods() -> dict[str, Descriptor]:
    """Every mmsearch gRPC method ("/pkg.Service/Method") and its request message."""
    methods = {}
    for file in SERVICE_FILES:
        for service in file.services_by_name.values():
            for method in service.methods:
                methods[f"/{service.full_name}/{method.name}"] = method.input_type
    return methods


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref:
        resolved: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
        return resolved
    return schema


def _request_schema(document: dict[str, Any], path: str, method: str) -> dict[str, Any] | None:
    """The schema an operation takes its gRPC request from: the JSON body, or the multipart
    form's JSON field plus its file parts (which carry `query` / `items` / `images`)."""
    operation = document["paths"].get(path, {}).get(method.lower())
    if operation is None:
        return None
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        return _resolve(document, content["application/json"]["schema"])
    if "multipart/form-data" in content:
        return content["multipart/form-data"]["schema"]  # type: ignore[no-any-return]
    # A GET takes its request's fields as query parameters.
    query = {p["name"]: p["schema"] for p in operation.get("parameters", []) if p["in"] == "query"}
    return {"type": "object", "properties": query}


# Request fields a multipart endpoint carries as file parts rather than in its JSON field.
FILE_FIELDS = {
    "/mmsearch.v1.Searcher/Search": "query",
    "/mmsearch.v1.Embedder/Embed": "items",
    "/mmsearch.v1.Embedder/ExtractText": "images",
}


def missing_fields(document: dict[str, Any], endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> list[str]:
    """What the document fails to expose of the protos; empty when it covers them."""
    problems: list[str] = []
    methods = grpc_methods()
    fronted = {e.rpc for e in endpoints if e.rpc}
    for name in sorted(methods):
        if name not in fronted and name not in NOT_EXPOSED:
            problems.append(f"gRPC method {name} has no HTTP endpoint and no reason in NOT_EXPOSED")
    for endpoint in endpoints:
        if not endpoint.rpc:
            continue
        request = methods[endpoint.rpc]
        schema = _request_schema(document, endpoint.path, endpoint.method)
        if schema is None:
            problems.append(f"{endpoint.method} {endpoint.path} is missing from the document")
            continue
        exposed = set(schema.get("properties", {}))
        if endpoint.body == "multipart":
            nested = [p for p in schema["properties"].values() if "$ref" in p]
            exposed = set().union(*(set(_resolve(document, p).get("properties", {})) for p in nested))
            if any(
                p.get("contentMediaType") or p.get("items", {}).get("contentMediaType")
                for p in schema["properties"].values()
            ):
                exposed.add(request.fields_by_name[FILE_FIELDS[endpoint.rpc]].json_name)
        for field in request.fields:
            if field.json_name not in exposed:
                problems.append(
                    f"{endpoint.method} {endpoint.path}: request field {request.full_name}."
                    f"{field.name} ({field.json_name}) is not exposed"
                )
        if endpoint.body != "none":  # a GET's (empty) request has no schema; a new field fails above
            problems += _message_drift(document, request)
    return problems


def _message_drift(
    document: dict[str, Any], descriptor: Descriptor, seen: set[str] | None = None
) -> list[str]:
    """Each message schema reachable from a request has exactly its proto's fields."""
    seen = set() if seen is None else seen
    if descriptor.full_name in seen or descriptor.full_name in WELL_KNOWN:
        return []
    seen.add(descriptor.full_name)
    if descriptor.GetOptions().map_entry:
        value = descriptor.fields_by_name["value"].message_type
        return [] if value is None else _message_drift(document, value, seen)
    schema = document["components"]["schemas"].get(schema_name(descriptor))
    if schema is None:
        return [f"schema {schema_name(descriptor)} is missing"]
    expected = {f.json_name for f in descriptor.fields}
    actual = set(schema.get("properties", {}))
    problems = [f"schema {schema_name(descriptor)} lacks field {n}" for n in sorted(expected - actual)]
    problems += [
        f"schema {schema_name(descriptor)} has no proto field {n}" for n in sorted(actual - expected)
    ]
    for field in descriptor.fields:
        if field.message_type is not None:
            problems += _message_drift(document, field.message_type, seen)
    return problems
