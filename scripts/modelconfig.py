"""Build, read and re-render Triton model configurations (`config.pbtxt`).

The messages are Triton's own (`tritonclient.grpc.model_config_pb2.ModelConfig`),
parsed with `google.protobuf.text_format`, so a file this module writes is one
Triton reads the same way. Every file is written by one renderer,
`render_config`, whether it is new or edited; nothing edits text in place.

- `build_config(ModelSpec(...))` makes the configuration of an encoder or a
  reranker that follows the embedder's tensor contract (`contract_problems`
  checks any configuration against it); `contract_comments` documents that
  contract in the rendered file.
- `parse_document` / `read_document` load a file as a `Document`: the message,
  the leading comment block and every other comment keyed by the element it
  describes ("input.TEXT", "parameters.KEY", "dynamic_batching", ...).
  `Document.render()` writes each comment back at its element, so an edit
  changes the message and re-renders it without losing comments, and a rendered
  file parses and renders to the same text.
- `set_instances` / `set_instances_file` set the instance group (count, kind,
  GPUs) and the `intra_op_threads` parameter.
- `with_queue_policy` / `set_queue_policy` give the dynamic batcher two priority
  levels and a queue policy that rejects expired requests (`build_config` always
  does); `queue_policy_problems` says what is missing.

CLI (`python scripts/modelconfig.py`):

    show model_repository/minilm_l6_text [more model dirs or config.pbtxt files]
    set-instances model_repository/<model> --count N [--kind cpu|gpu] [--gpus 0,1] [--threads T] [--dry-run]
    set-queue-policy model_repository/*/
    format model_repository/*/ [--check]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from google.protobuf import text_encoding, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2

# tritonclient ships no type stubs: `ModelConfig` stands for
# `model_config_pb2.ModelConfig` in signatures.
ModelConfig: TypeAlias = Any

Role = Literal["text", "image", "reranker"]
InstanceKind = Literal["cpu", "gpu"]
ROLES: tuple[Role, ...] = ("text", "image", "reranker")
KINDS: dict[str, str] = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
CONFIG_FILE = "config.pbtxt"
THREADS_PARAMETER = "intra_op_threads"
THREADS_COMMENT = "ONNX Runtime threads per instance; 0 lets ONNX Runtime choose."
# Request priorities (mmsearch/clients/triton.py sends them): 1 = a caller is
# waiting (Search, caller-facing Embed, Rerank), 2 = bulk (indexer, re-embed).
PRIORITY_LEVELS = 2
# Requests that name no priority queue as bulk: unlabelled work never jumps
# ahead of a waiting caller.
DEFAULT_PRIORITY_LEVEL = 2
# Queue timeout for requests that carry none (every mmsearch request carries its
# caller's remaining time, which overrides this).
DEFAULT_QUEUE_TIMEOUT_US = 30_000_000
QUEUE_POLICY_COMMENT = (
    "Priority 1 (a caller waits) is dequeued before 2 (bulk ingest); requests without\n"
    "one are bulk. A request whose timeout (its caller's remaining time) passes while\n"
    "queued is rejected, not executed: nobody waits for its answer any more."
)
# The embedder resizes and center-crops every image to this before sending PIXELS.
IMAGE_SIZE = 224


class ModelConfigError(ValueError):
    """A configuration cannot be parsed, built or edited as asked."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # a model_config_pb2.DataType name, e.g. "TYPE_FP32"
    dims: tuple[int, ...]


def contract(role: Role, dimension: int) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The inputs and the outputs the embedder (text, image) or the reranker uses.

    Shapes are per batch row: every such model batches (max_batch_size > 0).
    """
    if role == "text":
        return (
            (TensorSpec("TEXT", "TYPE_STRING", (1,)),),
            (
                TensorSpec("EMBEDDING", "TYPE_FP32", (dimension,)),
                TensorSpec("TOKENS", "TYPE_INT32", (1,)),
                TensorSpec("TRUNCATED", "TYPE_BOOL", (1,)),
            ),
        )
    if role == "image":
        return (
            (TensorSpec("PIXELS", "TYPE_UINT8", (IMAGE_SIZE, IMAGE_SIZE, 3)),),
            (TensorSpec("EMBEDDING", "TYPE_FP32", (dimension,)),),
        )
    return (
        (TensorSpec("QUERY", "TYPE_STRING", (1,)), TensorSpec("DOCUMENT", "TYPE_STRING", (1,))),
        (TensorSpec("SCORE", "TYPE_FP32", (1,)),),
    )


CONTRACT_COMMENTS: dict[Role, dict[str, str]] = {
    "text": {
        "input.TEXT": "UTF-8 text, one per batch row.",
        "output.EMBEDDING": "L2-normalized text embedding.",
        "output.TOKENS": "Tokens the encoder read, including special tokens, after truncation.",
        "output.TRUNCATED": "True when the text was cut at the model's context length.",
    },
    "image": {
        "input.PIXELS": (
            "RGB, 224x224, already decoded, EXIF-rotated, resized (shorter side 224,\n"
            "bicubic) and center-cropped by the embedder."
        ),
        "output.EMBEDDING": "L2-normalized image embedding.",
    },
    "reranker": {
        "input.QUERY": "One (query, document) pair per batch row.",
        "output.SCORE": "Higher = more relevant (the cross-encoder's logit).",
    },
}


@dataclass(frozen=True)
class ModelSpec:
    """What `build_config` needs to write a model following the embedder's contract."""

    name: str
    role: Role
    dimension: int = 0  # EMBEDDING size; encoders only
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32)
    max_queue_delay_us: int = 2000
    instance_count: int = 1
    instance_kind: InstanceKind = "cpu"
    gpus: tuple[int, ...] = ()
    backend: str = "python"
    # String parameters passed to the model (`intra_op_threads` is added as "0" when absent).
    parameters: Mapping[str, str] = field(default_factory=dict)
    # Outputs beyond the contract (e.g. LABELS of the ConSE image model).
    extra_outputs: tuple[TensorSpec, ...] = ()


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def build_config(spec: ModelSpec) -> ModelConfig:
    """A ModelConfig for `spec`; raises ModelConfigError on inconsistent values."""
    if not _NAME.match(spec.name):
        raise ModelConfigError(f"model name {spec.name!r} is not a valid directory name")
    if spec.role not in ROLES:
        raise ModelConfigError(f"role {spec.role!r} is not one of {ROLES}")
    if spec.role != "reranker" and spec.dimension <= 0:
        raise ModelConfigError(f"{spec.name}: an encoder needs dimension > 0")
    if spec.max_batch_size <= 0:
        raise ModelConfigError(f"{spec.name}: the embedder batches; max_batch_size must be > 0")
    sizes = spec.preferred_batch_sizes
    if list(sizes) != sorted(set(sizes)) or any(s < 1 or s > spec.max_batch_size for s in sizes):
        raise ModelConfigError(
            f"{spec.name}: preferred batch sizes {sizes} must be increasing, in 1..{spec.max_batch_size}"
        )
    if spec.max_queue_delay_us < 0:
        raise ModelConfigError(f"{spec.name}: max_queue_delay_us must be >= 0")
    inputs, outputs = contract(spec.role, spec.dimension)
    config = model_config_pb2.ModelConfig(name=spec.name, backend=spec.backend)
    config.max_batch_size = spec.max_batch_size
    for tensors, target in ((inputs, config.input), (outputs + spec.extra_outputs, config.output)):
        for tensor in tensors:
            target.add(
                name=tensor.name,
                data_type=model_config_pb2.DataType.Value(tensor.data_type),
                dims=list(tensor.dims),
            )
    config.dynamic_batching.preferred_batch_size.extend(sizes)
    config.dynamic_batching.max_queue_delay_microseconds = spec.max_queue_delay_us
    with_queue_policy(config)
    config.version_policy.latest.num_versions = 1
    parameters = dict(spec.parameters)
    parameters.setdefault(THREADS_PARAMETER, "0")
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return with_instances(config, spec.instance_count, spec.instance_kind, None, spec.gpus)


def with_queue_policy(config: ModelConfig) -> ModelConfig:
    """Set (in place, and return) the dynamic batcher's priority levels and the
    queue policy that rejects expired requests instead of executing them."""
    batching = config.dynamic_batching
    batching.priority_levels = PRIORITY_LEVELS
    batching.default_priority_level = DEFAULT_PRIORITY_LEVEL
    policy = batching.default_queue_policy
    policy.timeout_action = model_config_pb2.ModelQueuePolicy.REJECT
    policy.default_timeout_microseconds = DEFAULT_QUEUE_TIMEOUT_US
    policy.allow_timeout_override = True
    return config


def queue_policy_problems(config: ModelConfig) -> list[str]:
    """Why `config` would let Triton execute requests nobody waits for ([] when it does not)."""
    if not config.HasField("dynamic_batching"):
        return ["no dynamic_batching: requests carry no priority and expired ones are executed"]
    batching = config.dynamic_batching
    policy = batching.default_queue_policy
    problems = []
    if batching.priority_levels != PRIORITY_LEVELS:
        problems.append(f"priority_levels is {batching.priority_levels}, expected {PRIORITY_LEVELS}")
    if not 1 <= batching.default_priority_level <= PRIORITY_LEVELS:
        problems.append("default_priority_level must be one of the levels")
    if policy.timeout_action != model_config_pb2.ModelQueuePolicy.REJECT or not policy.allow_timeout_override:
        problems.append("default_queue_policy must REJECT expired requests and allow_timeout_override")
    return problems


def contract_comments(role: Role, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Comments for `render_config` describing the contract tensors of `role`."""
    comments = {
        "dynamic_batching": (
            "Requests from many clients are merged into one execute(); the model runs\n"
            "them as one ONNX Runtime call and splits the outputs back per request.\n" + QUEUE_POLICY_COMMENT
        ),
        f"parameters.{THREADS_PARAMETER}": THREADS_COMMENT,
        **CONTRACT_COMMENTS[role],
    }
    comments.update(extra or {})
    return comments


# --- reading -----------------------------------------------------------------


def parse_config(text: str) -> ModelConfig:
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ModelConfigError(str(exc)) from exc
    return config


@dataclass(frozen=True)
class Document:
    """A config.pbtxt as the renderer writes it: the configuration plus its comments.

    `header` is the leading comment block; `comments` maps a top-level field
    ("dynamic_batching"), a named list element ("input.TEXT", "output.EMBEDDING")
    or a map entry ("parameters.KEY") to the comment written at that element."""

    config: ModelConfig
    header: str = ""
    comments: Mapping[str, str] = field(default_factory=dict)

    def render(self) -> str:
        return render_config(self.config, header=self.header, comments=self.comments)


def parse_document(text: str) -> Document:
    """`text` parsed into a ModelConfig, with each comment attached to its element.

    A comment belongs to the element it is written in (a list element or a map
    entry, found by its `name` / `key`), else to the top-level field after it;
    comments before the first field are the header, trailing ones go to the last
    field. Rendering the result writes every comment at the start of its element."""
    config = parse_config(text)
    comments: dict[str, list[str]] = {}
    pending: list[str] = []
    stack: list[str] = []  # open brackets
    top = ""  # the top-level field being read
    element, element_id, id_field = 0, "", ""  # depth inside the current element, its name/key
    previous = ""
    tokens = text_format.Tokenizer(text.splitlines(keepends=True), skip_comments=False)

    def flush(key: str) -> None:
        comments.setdefault(key, []).extend(pending)
        pending.clear()

    while not tokens.AtEnd():
        token = tokens.token
        if token.startswith("#"):
            line = token[1:].rstrip()
            pending.append(line[1:] if line.startswith(" ") else line)
        elif token in ("{", "<", "["):
            # An element: a message or map entry at the top level, or one inside a top-level list.
            if token != "[" and (not stack or stack == ["["]):
                element, element_id = len(stack) + 1, ""
            stack.append(token)
        elif token in ("}", ">", "]") and stack:
            stack.pop()
            if len(stack) < element:
                flush(f"{top}.{element_id}" if element_id else top)
                element = 0
            elif not stack:
                flush(top)
        elif not stack and previous != ":" and _IDENTIFIER.match(token):
            top = token
            fd = model_config_pb2.ModelConfig.DESCRIPTOR.fields_by_name.get(top)
            id_field = _id_field(fd) if fd is not None else ""
            flush(top if comments else "")  # the first field's comments are the header
        elif element and len(stack) == element and token == id_field and id_field:
            tokens.NextToken()
            tokens.TryConsume(":")
            if tokens.token[:1] in ('"', "'"):
                element_id = tokens.ConsumeString()
            previous = ""
            continue
        previous = token
        tokens.NextToken()
    flush(top if comments else "")
    header = "\n".join(comments.pop("", []))
    return Document(config, header, {key: "\n".join(lines) for key, lines in comments.items() if lines})


def config_path(path: str | os.PathLike[str]) -> Path:
    """`path` itself if it is a file, else `path`/config.pbtxt (a model directory)."""
    p = Path(path)
    return p / CONFIG_FILE if p.is_dir() else p


def read_document(path: str | os.PathLike[str]) -> Document:
    file = config_path(path)
    try:
        return parse_document(file.read_text(encoding="utf-8"))
    except ModelConfigError as exc:
        raise ModelConfigError(f"{file}: {exc}") from exc


def read_config(path: str | os.PathLike[str]) -> ModelConfig:
    return read_document(path).config


def data_type_name(value: int) -> str:
    return str(model_config_pb2.DataType.Name(value))


def kind_name(value: int) -> str:
    return str(model_config_pb2.ModelInstanceGroup.Kind.Name(value))


def _describe(tensors: Iterable[Any]) -> list[TensorSpec]:
    return [TensorSpec(t.name, data_type_name(t.data_type), tuple(int(d) for d in t.dims)) for t in tensors]


def detect_role(config: ModelConfig) -> Role | None:
    names = {t.name for t in config.input}
    if names == {"TEXT"}:
        return "text"
    if names == {"PIXELS"}:
        return "image"
    if names == {"QUERY", "DOCUMENT"}:
        return "reranker"
    return None


def embedding_dimension(config: ModelConfig) -> int | None:
    for tensor in config.output:
        if tensor.name == "EMBEDDING" and len(tensor.dims) == 1:
            return int(tensor.dims[0])
    return None


def contract_problems(config: ModelConfig, role: Role) -> list[str]:
    """Why the embedder/reranker could not use `config` as a `role` model ([] when it can).

    Inputs must match exactly; the contract's outputs must be present (others may be)."""
    problems: list[str] = []
    if config.max_batch_size <= 0:
        problems.append("max_batch_size must be > 0 (the contract's shapes are per batch row)")
    dimension = embedding_dimension(config) or 0
    if role != "reranker" and dimension <= 0:
        problems.append("EMBEDDING must be FP32 with dims [D], D > 0")
    inputs, outputs = contract(role, dimension)
    have_inputs = {t.name: t for t in _describe(config.input)}
    if set(have_inputs) != {t.name for t in inputs}:
        problems.append(f"inputs are {sorted(have_inputs)}, expected {[t.name for t in inputs]}")
    have_outputs = {t.name: t for t in _describe(config.output)}
    for want in outputs:
        if want.name not in have_outputs:
            problems.append(f"missing output {want.name}")
    pairs = [(t, have_inputs.get(t.name)) for t in inputs] + [(t, have_outputs.get(t.name)) for t in outputs]
    for want, have in pairs:
        if have is not None and have != want:
            got, expected = f"{have.data_type} {list(have.dims)}", f"{want.data_type} {list(want.dims)}"
            problems.append(f"{want.name} is {got}, expected {expected}")
    return problems


# --- editing -----------------------------------------------------------------


def with_instances(
    config: ModelConfig,
    count: int,
    kind: InstanceKind | None = None,
    threads: int | None = None,
    gpus: Sequence[int] | None = None,
) -> ModelConfig:
    """A copy of `config` with one instance group of `count` instances.

    `kind` None keeps the current kind (first group's; CPU when there is none).
    `gpus` None keeps the current group's GPU list when the kind stays GPU.
    `threads` None leaves `intra_op_threads` as it is."""
    if count < 1:
        raise ModelConfigError("the instance count must be >= 1")
    if threads is not None and threads < 0:
        raise ModelConfigError("intra_op_threads must be >= 0 (0 lets ONNX Runtime choose)")
    current = config.instance_group[0] if len(config.instance_group) else None
    if kind is not None:
        if kind not in KINDS:
            raise ModelConfigError(f"kind {kind!r} is not one of {sorted(KINDS)}")
        kind_value = model_config_pb2.ModelInstanceGroup.Kind.Value(KINDS[kind])
    elif current is not None:
        kind_value = current.kind
    else:
        kind_value = model_config_pb2.ModelInstanceGroup.KIND_CPU
    is_gpu = kind_value == model_config_pb2.ModelInstanceGroup.KIND_GPU
    if gpus is None:
        gpus = list(current.gpus) if current is not None and is_gpu else []
    if gpus and not is_gpu:
        raise ModelConfigError("GPU ids are only meaningful with kind gpu")
    if any(g < 0 for g in gpus):
        raise ModelConfigError("GPU ids must be >= 0")
    edited = model_config_pb2.ModelConfig()
    edited.CopyFrom(config)
    del edited.instance_group[:]
    group = edited.instance_group.add(count=count, kind=kind_value)
    group.gpus.extend(gpus)
    if threads is not None:
        edited.parameters[THREADS_PARAMETER].string_value = str(threads)
    return edited


def set_instances(
    document: Document,
    count: int,
    kind: InstanceKind | None = None,
    threads: int | None = None,
    gpus: Sequence[int] | None = None,
) -> Document:
    """`document` with one instance group and, when `threads` is given, `intra_op_threads` set."""
    comments = dict(document.comments)
    if threads is not None:
        comments.setdefault(f"parameters.{THREADS_PARAMETER}", THREADS_COMMENT)
    return Document(with_instances(document.config, count, kind, threads, gpus), document.header, comments)


def set_queue_policy(document: Document) -> Document:
    """`document` with `with_queue_policy` applied and its comment at dynamic_batching."""
    config = model_config_pb2.ModelConfig()
    config.CopyFrom(document.config)
    comments = dict(document.comments)
    existing = comments.get("dynamic_batching", "")
    if QUEUE_POLICY_COMMENT not in existing:
        comments["dynamic_batching"] = "\n".join(filter(None, (existing, QUEUE_POLICY_COMMENT)))
    return Document(with_queue_policy(config), document.header, comments)


def set_instances_file(
    path: str | os.PathLike[str],
    count: int,
    kind: InstanceKind | None = None,
    threads: int | None = None,
    gpus: Sequence[int] | None = None,
    *,
    write: bool = True,
) -> Document:
    """Re-render the config.pbtxt at `path` (a model directory or the file) with `set_instances`."""
    edited = set_instances(read_document(path), count, kind, threads, gpus)
    if write:
        _write_atomic(config_path(path), edited.render())
    return edited


def _write_atomic(file: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", dir=file.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, file.stat().st_mode & 0o7777 if file.exists() else 0o644)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- rendering ---------------------------------------------------------------

# Top-level fields in the order of the hand-written files; others follow in field order.
_ORDER = (
    "name",
    "platform",
    "backend",
    "runtime",
    "default_model_filename",
    "max_batch_size",
    "input",
    "output",
    "batch_input",
    "batch_output",
    "dynamic_batching",
    "sequence_batching",
    "ensemble_scheduling",
    "instance_group",
    "version_policy",
    "optimization",
    "parameters",
)
_INNER_ORDER = {"ModelInstanceGroup": ("name", "count", "kind", "gpus")}
_MAX_BATCH_SIZE: FieldDescriptor = model_config_pb2.ModelConfig.DESCRIPTOR.fields_by_name["max_batch_size"]
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Written even at their default value, because the default is the point:
# REJECT (0) is what keeps expired requests from running.
_ALWAYS_WRITTEN = {"ModelQueuePolicy": ("timeout_action",)}


def render_config(config: ModelConfig, *, header: str = "", comments: Mapping[str, str] | None = None) -> str:
    """`config` as config.pbtxt text: the one renderer for new and edited files.

    `header` becomes the leading comment block; `comments` maps "field",
    "input.NAME", "output.NAME", "parameters.KEY" (any top-level field, named
    list element or map entry) to a comment written at that element. A comment
    whose element is missing is written at its top-level field, else in the
    header, so no comment is dropped. `parse_document` reads both back."""
    header, placed = _place(config, header, comments or {})
    body = _render_fields(config, 0, placed)
    return "\n".join(_comment("", header) + body).strip("\n") + "\n"


def _id_field(fd: FieldDescriptor) -> str:
    """The field naming an element of the top-level field `fd` in comment keys ("" for none)."""
    if _is_map(fd):
        return "key"
    if fd.message_type is not None and _is_repeated(fd) and "name" in fd.message_type.fields_by_name:
        return "name"
    return ""


def _place(config: ModelConfig, header: str, comments: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    fields = _ordered_fields(config, 0)
    anchors = {""}
    for fd, value in fields:
        anchors.add(fd.name)
        key_field = _id_field(fd)
        if key_field:
            anchors.update(f"{fd.name}.{item if _is_map(fd) else getattr(item, key_field)}" for item in value)
    placed: dict[str, list[str]] = {"": [header] if header else []}
    for key, text in comments.items():
        top = key.split(".", 1)[0]
        anchor = key if key in anchors else top if top in anchors else ""
        if text:
            placed.setdefault(anchor, []).append(text)
    # A comment above the first field reads back as part of the header.
    placed[""] += placed.pop(fields[0][0].name, [])
    return "\n".join(placed.pop("")), {key: "\n".join(texts) for key, texts in placed.items()}


def _quote(value: str) -> str:
    return '"' + text_encoding.CEscape(value.encode("utf-8"), as_utf8=True) + '"'


def _scalar(fd: FieldDescriptor, value: Any) -> str:
    if fd.type == FieldDescriptor.TYPE_ENUM and fd.enum_type is not None:
        return str(fd.enum_type.values_by_number[value].name)
    if fd.type == FieldDescriptor.TYPE_STRING:
        return _quote(value)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return '"' + text_encoding.CEscape(value, as_utf8=False) + '"'
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if fd.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return repr(float(value))
    return str(value)


_LABEL_REPEATED = 3  # FieldDescriptorProto.LABEL_REPEATED


def _is_repeated(fd: FieldDescriptor) -> bool:
    label: object = getattr(fd, "label", None)  # protobuf < 6; later versions have is_repeated
    return label == _LABEL_REPEATED if label is not None else bool(fd.is_repeated)


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and bool(fd.message_type.GetOptions().map_entry)


def _inline(message: Message) -> str | None:
    """`{ a: { b: 1 } }` for a message whose set fields form a single chain, else None."""
    fields = message.ListFields()
    if not fields:
        return "{ }"
    if len(fields) != 1 or _is_repeated(fields[0][0]):
        return None
    fd, value = fields[0]
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        inner = _inline(value)
        return None if inner is None else f"{{ {fd.name}: {inner} }}"
    return f"{{ {fd.name}: {_scalar(fd, value)} }}"


def _comment(pad: str, text: str | None) -> list[str]:
    return [f"{pad}# {line}".rstrip() for line in text.split("\n")] if text else []


def _render_map(fd: FieldDescriptor, value: Any, indent: int, comments: dict[str, str]) -> list[str]:
    pad = " " * indent
    entry = fd.message_type
    assert entry is not None
    key_fd, value_fd = entry.fields_by_name["key"], entry.fields_by_name["value"]
    lines: list[str] = []
    for key in sorted(value):
        lines.append(f"{pad}{fd.name} {{")
        if indent == 0:
            lines.extend(_comment(pad + "  ", comments.pop(f"{fd.name}.{key}", None)))
        lines.append(f"{pad}  key: {_scalar(key_fd, key)}")
        item = value[key]
        if value_fd.type != FieldDescriptor.TYPE_MESSAGE:
            lines.append(f"{pad}  value: {_scalar(value_fd, item)}")
        elif (inline := _inline(item)) is not None:
            lines.append(f"{pad}  value: {inline}")
        else:
            lines.extend([f"{pad}  value {{", *_render_fields(item, indent + 4, comments), f"{pad}  }}"])
        lines.append(f"{pad}}}")
    return lines


def _render_list(fd: FieldDescriptor, value: Any, indent: int, comments: dict[str, str]) -> list[str]:
    pad = " " * indent
    key_field = _id_field(fd) if indent == 0 else ""
    lines = [f"{pad}{fd.name} ["]
    for n, item in enumerate(value):
        lines.append(f"{pad}  {{")
        if key_field and getattr(item, key_field):
            lines.extend(_comment(pad + "    ", comments.pop(f"{fd.name}.{getattr(item, key_field)}", None)))
        lines.extend(_render_fields(item, indent + 4, comments))
        lines.append(f"{pad}  }}" + ("," if n < len(value) - 1 else ""))
    lines.append(f"{pad}]")
    return lines


def _render_field(fd: FieldDescriptor, value: Any, indent: int, comments: dict[str, str]) -> list[str]:
    pad = " " * indent
    if _is_map(fd):
        return _render_map(fd, value, indent, comments)
    if fd.type != FieldDescriptor.TYPE_MESSAGE:
        if _is_repeated(fd):
            return [f"{pad}{fd.name}: [ {', '.join(_scalar(fd, v) for v in value)} ]"]
        return [f"{pad}{fd.name}: {_scalar(fd, value)}"]
    if _is_repeated(fd):
        return _render_list(fd, value, indent, comments)
    inline = _inline(value)
    # dynamic_batching stays a block even with one setting, as in the hand-written files.
    if inline is not None and not (indent == 0 and fd.name == "dynamic_batching"):
        return [f"{pad}{fd.name}: {inline}"]
    return [f"{pad}{fd.name} {{", *_render_fields(value, indent + 2, comments), f"{pad}}}"]


def _ordered_fields(message: Message, indent: int) -> list[tuple[FieldDescriptor, Any]]:
    """The fields to write, in order: the set ones, and `max_batch_size` even when it is 0."""
    fields = list(message.ListFields())
    if indent == 0 and not any(fd.name == "max_batch_size" for fd, _ in fields):
        fields.append((_MAX_BATCH_SIZE, 0))
    for name in _ALWAYS_WRITTEN.get(message.DESCRIPTOR.name, ()):
        if not any(fd.name == name for fd, _ in fields):
            fd = message.DESCRIPTOR.fields_by_name[name]
            fields.append((fd, getattr(message, name)))
            fields.sort(key=lambda f: f[0].number)
    order = _ORDER if indent == 0 else _INNER_ORDER.get(message.DESCRIPTOR.name, ())
    if order:
        rank = {name: i for i, name in enumerate(order)}
        fields.sort(key=lambda f: (rank.get(f[0].name, len(rank)), f[0].number))
    return fields


def _render_fields(message: Message, indent: int, comments: dict[str, str]) -> list[str]:
    fields = _ordered_fields(message, indent)
    lines: list[str] = []
    previous = ""
    for fd, value in fields:
        comment = _comment("", comments.pop(fd.name, None)) if indent == 0 else []
        # Blocks and commented top-level fields stand apart from their neighbours;
        # outputs follow inputs directly, as in the hand-written files.
        spaced = indent == 0 and (fd.type == FieldDescriptor.TYPE_MESSAGE or bool(comment))
        if (previous, fd.name) == ("input", "output") and not comment:
            lines.pop()
        elif spaced and lines and lines[-1]:
            lines.append("")
        lines.extend(comment)
        lines.extend(_render_field(fd, value, indent, comments))
        if spaced:
            lines.append("")
        previous = fd.name if indent == 0 else ""
    while lines and not lines[-1]:
        lines.pop()
    return lines


# --- CLI -----------------------------------------------------------------------


def describe(config: ModelConfig, source: str = "") -> str:
    """A human-readable summary, with the embedder contract the model matches."""
    out = [f"{config.name or '(no name)'}" + (f"  ({source})" if source else "")]
    out.append(
        f"  backend: {config.backend or config.platform or '?'}   max_batch_size: {config.max_batch_size}"
    )
    for label, tensors in (("input", config.input), ("output", config.output)):
        for t in _describe(tensors):
            out.append(f"  {label:6} {t.name:12} {t.data_type:12} {list(t.dims)}")
    if config.HasField("dynamic_batching"):
        batching = config.dynamic_batching
        out.append(
            f"  dynamic batching: preferred {list(batching.preferred_batch_size)}, "
            f"max queue delay {batching.max_queue_delay_microseconds} us, "
            f"priority levels {batching.priority_levels} (default {batching.default_priority_level})"
        )
    else:
        out.append("  dynamic batching: off")
    for group in config.instance_group or []:
        gpus = f" gpus {list(group.gpus)}" if len(group.gpus) else ""
        out.append(f"  instances: {group.count or 1} x {kind_name(group.kind)}{gpus}")
    if not len(config.instance_group):
        out.append("  instances: Triton's default (one per GPU, else one CPU instance)")
    for key in sorted(config.parameters):
        out.append(f"  parameter {key} = {config.parameters[key].string_value!r}")
    for problem in queue_policy_problems(config):
        out.append(f"  WARNING: {problem}")
    role = detect_role(config)
    if role is None:
        out.append("  contract: none of text/image/reranker (used directly by its own client code)")
    else:
        problems = contract_problems(config, role)
        status = "ok" if not problems else "PROBLEMS: " + "; ".join(problems)
        out.append(f"  contract: {role} {status}")
    return "\n".join(out)


def _gpu_list(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of GPU ids") from exc


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python scripts/modelconfig.py", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="summarize model configurations and check the embedder contract")
    show.add_argument("paths", nargs="+", help="model directories or config.pbtxt files")
    show.add_argument("--pbtxt", action="store_true", help="print the parsed configuration as text format")
    edit = sub.add_parser("set-instances", help="set the instance group and intra_op_threads of a model")
    edit.add_argument("path", help="model directory or config.pbtxt file")
    edit.add_argument("--count", type=_positive, required=True, help="instances (per GPU with --kind gpu)")
    edit.add_argument("--kind", choices=sorted(KINDS), help="instance kind (default: keep the current one)")
    edit.add_argument("--gpus", type=_gpu_list, help="GPU ids for --kind gpu, e.g. 0,1 (default: all)")
    edit.add_argument(
        "--threads", type=_non_negative, help="intra_op_threads per instance (0 = ONNX Runtime's)"
    )
    edit.add_argument(
        "--dry-run", action="store_true", help="print the new config.pbtxt instead of writing it"
    )
    queue = sub.add_parser(
        "set-queue-policy", help="set priority levels and the reject-expired queue policy (idempotent)"
    )
    queue.add_argument("paths", nargs="+", help="model directories or config.pbtxt files")
    fmt = sub.add_parser("format", help="re-render config.pbtxt files in the tool's layout (comments kept)")
    fmt.add_argument("paths", nargs="+", help="model directories or config.pbtxt files")
    fmt.add_argument("--check", action="store_true", help="only list files that would change; exit 1 if any")
    return parser


def _format(paths: Sequence[str], check: bool) -> int:
    changed = 0
    for path in paths:
        file = config_path(path)
        text = file.read_text(encoding="utf-8")
        rendered = read_document(file).render()
        if rendered != text:
            changed += 1
            print(f"{'would re-render' if check else 're-rendered'} {file}")
            if not check:
                _write_atomic(file, rendered)
    return 1 if check and changed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "format":
            return _format(args.paths, args.check)
        if args.command == "set-queue-policy":
            for path in args.paths:
                rendered = set_queue_policy(read_document(path)).render()
                if rendered != config_path(path).read_text(encoding="utf-8"):
                    _write_atomic(config_path(path), rendered)
                    print(f"re-rendered {config_path(path)}")
            return 0
        if args.command == "show":
            for n, path in enumerate(args.paths):
                file = config_path(path)
                config = read_config(file)
                print(("\n" if n else "") + describe(config, str(file)))
                if config.name and config.name != file.parent.name:
                    print(f"  WARNING: name {config.name!r} differs from the directory {file.parent.name!r}")
                if args.pbtxt:
                    print(render_config(config))
            return 0
        edited = set_instances_file(
            args.path, args.count, args.kind, args.threads, args.gpus, write=not args.dry_run
        )
    except (ModelConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        sys.stdout.write(edited.render())
    else:
        print(describe(edited.config, str(config_path(args.path))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
