"""Build, read and edit Triton model configurations (`config.pbtxt`).

The messages are Triton's own (`tritonclient.grpc.model_config_pb2.ModelConfig`),
parsed and checked with `google.protobuf.text_format`, so a file this module
writes is one Triton reads the same way.

- `build_config(ModelSpec(...))` makes the configuration of an encoder or a
  reranker that follows the embedder's tensor contract (`contract_problems`
  checks any configuration against it); `render_config` prints it in the style
  of the hand-written files in model_repository/ (lists in brackets, comments).
- `read_config` / `parse_config` load an existing file.
- `set_instances_text` sets the instance group (count, kind, GPUs) and the
  `intra_op_threads` parameter. It edits only those spans of the text, so every
  comment in the file stays; the result is parsed back and compared with the
  intended configuration, and if that ever differs the file is written from
  the configuration instead, keeping its leading comment block.

CLI (`python -m modelconfig`):

    show model_repository/minilm_l6_text [more model dirs or config.pbtxt files]
    set-instances model_repository/<model> --count N [--kind cpu|gpu] [--gpus 0,1] [--threads T] [--dry-run]
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
    config.version_policy.latest.num_versions = 1
    parameters = dict(spec.parameters)
    parameters.setdefault(THREADS_PARAMETER, "0")
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return with_instances(config, spec.instance_count, spec.instance_kind, None, spec.gpus)


def contract_comments(role: Role, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Comments for `render_config` describing the contract tensors of `role`."""
    comments = {
        "dynamic_batching": (
            "Requests from many clients are merged into one execute(); the model runs\n"
            "them as one ONNX Runtime call and splits the outputs back per request."
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


def config_path(path: str | os.PathLike[str]) -> Path:
    """`path` itself if it is a file, else `path`/config.pbtxt (a model directory)."""
    p = Path(path)
    return p / CONFIG_FILE if p.is_dir() else p


def read_config(path: str | os.PathLike[str]) -> ModelConfig:
    file = config_path(path)
    try:
        return parse_config(file.read_text(encoding="utf-8"))
    except ModelConfigError as exc:
        raise ModelConfigError(f"{file}: {exc}") from exc


def leading_comment(text: str) -> str:
    """The comment lines (and blank lines between them) at the top of a file."""
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and lines):
            lines.append(line.rstrip())
        elif stripped:
            break
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


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


@dataclass(frozen=True)
class Edit:
    text: str
    config: ModelConfig
    # False when the file had to be rewritten from the configuration (only the
    # leading comment block kept) because a span edit did not give the intended result.
    comments_kept: bool


def set_instances_text(
    text: str,
    count: int,
    kind: InstanceKind | None = None,
    threads: int | None = None,
    gpus: Sequence[int] | None = None,
) -> Edit:
    """`text` (a config.pbtxt) with its instance group and `intra_op_threads` set."""
    expected = with_instances(parse_config(text), count, kind, threads, gpus)
    try:
        edited = _edit_spans(text, expected, threads is not None)
        if parse_config(edited) == expected:
            return Edit(edited, expected, True)
    except ModelConfigError:
        pass
    return Edit(render_config(expected, header=leading_comment(text)), expected, False)


def set_instances_file(
    path: str | os.PathLike[str],
    count: int,
    kind: InstanceKind | None = None,
    threads: int | None = None,
    gpus: Sequence[int] | None = None,
    *,
    write: bool = True,
) -> Edit:
    file = config_path(path)
    edit = set_instances_text(file.read_text(encoding="utf-8"), count, kind, threads, gpus)
    if write:
        _write_atomic(file, edit.text)
    return edit


def write_config(
    path: str | os.PathLike[str],
    config: ModelConfig,
    *,
    header: str = "",
    comments: Mapping[str, str] | None = None,
) -> Path:
    """Render `config` into `path` (a model directory or a config.pbtxt path)."""
    p = Path(path)
    file = p if p.suffix == ".pbtxt" else p / CONFIG_FILE
    file.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(file, render_config(config, header=header, comments=comments))
    return file


def _write_atomic(file: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", dir=file.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        if file.exists():
            os.chmod(tmp, file.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class _Span:
    name: str
    start: int  # the field name
    end: int  # just past the value
    value_start: int  # '{', '[', '<', or the scalar


def _skip_blank(text: str, i: int, end: int) -> int:
    while i < end:
        ch = text[i]
        if ch == "#":
            newline = text.find("\n", i, end)
            i = end if newline < 0 else newline + 1
        elif ch.isspace() or ch in ",;":
            i += 1
        else:
            break
    return i


def _skip_string(text: str, i: int, end: int) -> int:
    quote = text[i]
    i += 1
    while i < end:
        if text[i] == "\\":
            i += 2
        elif text[i] == quote:
            return i + 1
        elif text[i] == "\n":
            break
        else:
            i += 1
    raise ModelConfigError("unterminated string")


def _skip_brackets(text: str, i: int, end: int) -> int:
    depth = 0
    while i < end:
        ch = text[i]
        if ch == "#":
            newline = text.find("\n", i, end)
            i = end if newline < 0 else newline
        elif ch in "\"'":
            i = _skip_string(text, i, end)
        else:
            depth += (ch in "{[<") - (ch in "}]>")
            i += 1
            if depth == 0:
                return i
    raise ModelConfigError("unbalanced brackets")


def _skip_value(text: str, i: int, end: int) -> int:
    if i >= end:
        raise ModelConfigError("missing value")
    if text[i] in "{[<":
        return _skip_brackets(text, i, end)
    if text[i] in "\"'":
        i = _skip_string(text, i, end)
        while True:  # adjacent string literals concatenate
            j = _skip_blank(text, i, end)
            if j < end and text[j] in "\"'" and "\n" not in text[i:j]:
                i = _skip_string(text, j, end)
            else:
                return i
    j = i
    while j < end and not text[j].isspace() and text[j] not in ",;{}[]<>#":
        j += 1
    if j == i:
        raise ModelConfigError(f"unexpected {text[i]!r}")
    return j


def _fields(text: str, start: int, end: int) -> list[_Span]:
    """The fields directly inside text[start:end] (a file, or the inside of `{}`)."""
    spans: list[_Span] = []
    i = _skip_blank(text, start, end)
    while i < end:
        match = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(text, i, end)
        if match is None:
            raise ModelConfigError(f"expected a field name at offset {i}")
        j = _skip_blank(text, match.end(), end)
        if j < end and text[j] == ":":
            j = _skip_blank(text, j + 1, end)
        value_end = _skip_value(text, j, end)
        spans.append(_Span(match.group(), i, value_end, j))
        i = _skip_blank(text, value_end, end)
    return spans


def _inside(text: str, span: _Span) -> list[_Span]:
    if text[span.value_start] not in "{<":
        raise ModelConfigError(f"{span.name} is not a message")
    return _fields(text, span.value_start + 1, span.end - 1)


def _line_end(text: str, i: int) -> int:
    """Past the rest of the line after i when it is blank (to delete a whole block)."""
    j = i
    while j < len(text) and text[j] in " \t":
        j += 1
    return j + 1 if j < len(text) and text[j] == "\n" else i


def _edit_spans(text: str, expected: ModelConfig, set_threads: bool) -> str:
    top = _fields(text, 0, len(text))
    edits: list[tuple[int, int, str]] = []
    group = model_config_pb2.ModelConfig()
    group.instance_group.extend(expected.instance_group)
    group_text = "\n".join(_render_fields(group, 0, {}))
    groups = [s for s in top if s.name == "instance_group"]
    parameters = [s for s in top if s.name == "parameters"]
    if groups:
        edits.append((groups[0].start, groups[0].end, group_text))
        edits.extend((s.start, _line_end(text, s.end), "") for s in groups[1:])
    elif parameters:
        edits.append((parameters[0].start, parameters[0].start, group_text + "\n\n"))
    else:
        edits.append((len(text), len(text), ("\n" if text.endswith("\n") else "\n\n") + group_text + "\n"))
    if set_threads:
        threads = expected.parameters[THREADS_PARAMETER].string_value
        literal = f"string_value: {_quote(threads)}"
        found = False
        for span in parameters:
            entry = parse_config(text[span.start : span.end])
            if THREADS_PARAMETER not in entry.parameters:
                continue
            values = [s for s in _inside(text, span) if s.name == "value"]
            inner = [s for v in values for s in _inside(text, v) if s.name == "string_value"]
            if len(values) != 1 or len(inner) != 1:
                raise ModelConfigError(f"unexpected layout of the {THREADS_PARAMETER} parameter")
            edits.append((inner[0].start, inner[0].end, literal))
            found = True
        if not found:
            block = (
                f"parameters {{\n  # {THREADS_COMMENT}\n  key: {_quote(THREADS_PARAMETER)}\n"
                f"  value: {{ {literal} }}\n}}\n"
            )
            tail = text if text.endswith("\n") else text + "\n"
            edits.append((len(text), len(text), tail[len(text) :] + "\n" + block))
    edits.sort(key=lambda e: e[0], reverse=True)
    for start, end, replacement in edits:
        text = text[:start] + replacement + text[end:]
    return text


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


def render_config(config: ModelConfig, *, header: str = "", comments: Mapping[str, str] | None = None) -> str:
    """`config` as config.pbtxt text, in the style of the files in model_repository/.

    `header` becomes the leading comment block ("# " is added to lines without it);
    `comments` maps "field", "input.NAME", "output.NAME" or "parameters.KEY" to a
    comment written above that element."""
    lines = [line if line.startswith("#") else f"# {line}".rstrip() for line in header.splitlines()]
    body = _render_fields(config, 0, dict(comments or {}))
    return "\n".join(lines + body).strip("\n") + "\n"


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
    return [f"{pad}# {line}".rstrip() for line in text.splitlines()] if text else []


def _render_map(fd: FieldDescriptor, value: Any, indent: int, comments: dict[str, str]) -> list[str]:
    pad = " " * indent
    entry = fd.message_type
    assert entry is not None
    key_fd, value_fd = entry.fields_by_name["key"], entry.fields_by_name["value"]
    lines: list[str] = []
    for key in sorted(value):
        lines.append(f"{pad}{fd.name} {{")
        if indent == 0:
            lines.extend(_comment(pad + "  ", comments.get(f"{fd.name}.{key}")))
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
    lines = [f"{pad}{fd.name} ["]
    for n, item in enumerate(value):
        lines.append(f"{pad}  {{")
        if indent == 0:
            lines.extend(_comment(pad + "    ", comments.get(f"{fd.name}.{getattr(item, 'name', '')}")))
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


def _render_fields(message: Message, indent: int, comments: dict[str, str]) -> list[str]:
    fields = list(message.ListFields())
    order = _ORDER if indent == 0 else _INNER_ORDER.get(message.DESCRIPTOR.name, ())
    if order:
        rank = {name: i for i, name in enumerate(order)}
        fields.sort(key=lambda f: (rank.get(f[0].name, len(rank)), f[0].number))
    lines: list[str] = []
    for fd, value in fields:
        block = fd.type == FieldDescriptor.TYPE_MESSAGE and indent == 0
        if block and lines and lines[-1]:
            lines.append("")
        if indent == 0:
            lines.extend(_comment("", comments.get(fd.name)))
        lines.extend(_render_field(fd, value, indent, comments))
        if block:
            lines.append("")
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
            f"max queue delay {batching.max_queue_delay_microseconds} us"
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
    parser = argparse.ArgumentParser(prog="python -m modelconfig", description=__doc__.split("\n\n")[0])
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
        edit = set_instances_file(
            args.path, args.count, args.kind, args.threads, args.gpus, write=not args.dry_run
        )
    except (ModelConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        sys.stdout.write(edit.text)
    else:
        print(describe(edit.config, str(config_path(args.path))))
        if not edit.comments_kept:
            print("note: the file was rewritten from the configuration; only its leading comments were kept")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
