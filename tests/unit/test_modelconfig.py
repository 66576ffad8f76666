"""scripts/modelconfig.py and the pure parts of scripts/export_production_models.py
(no Triton, no torch)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from mmsearch.embedder.spaces import registry_from_file
from mmsearch.v1 import common_pb2

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = ROOT / "model_repository"
EXISTING = sorted(p.parent for p in REPOSITORY.glob("*/config.pbtxt"))


def _load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


modelconfig = _load_script("modelconfig")  # the export script imports it by this name
export = _load_script("export_production_models")


def _tensors(tensors: Any) -> list[tuple[str, str, list[int]]]:
    return [(t.name, modelconfig.data_type_name(t.data_type), list(t.dims)) for t in tensors]


def _spec(role: modelconfig.Role, **kwargs: Any) -> modelconfig.ModelSpec:
    return modelconfig.ModelSpec(
        name=f"m_{role}", role=role, dimension=0 if role == "reranker" else 512, **kwargs
    )


# --- generation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "inputs", "outputs"),
    [
        (
            "text",
            [("TEXT", "TYPE_STRING", [1])],
            [
                ("EMBEDDING", "TYPE_FP32", [512]),
                ("TOKENS", "TYPE_INT32", [1]),
                ("TRUNCATED", "TYPE_BOOL", [1]),
            ],
        ),
        ("image", [("PIXELS", "TYPE_UINT8", [224, 224, 3])], [("EMBEDDING", "TYPE_FP32", [512])]),
        (
            "reranker",
            [("QUERY", "TYPE_STRING", [1]), ("DOCUMENT", "TYPE_STRING", [1])],
            [("SCORE", "TYPE_FP32", [1])],
        ),
    ],
)
def test_generated_config_follows_contract_and_round_trips(
    role: modelconfig.Role, inputs: list[Any], outputs: list[Any]
) -> None:
    config = modelconfig.build_config(
        _spec(role, instance_count=2, instance_kind="gpu", parameters={"max_tokens": "77"})
    )
    assert _tensors(config.input) == inputs
    assert _tensors(config.output) == outputs
    assert config.backend == "python" and config.max_batch_size == 32
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert config.version_policy.latest.num_versions == 1
    assert [(g.count, modelconfig.kind_name(g.kind)) for g in config.instance_group] == [(2, "KIND_GPU")]
    assert config.parameters["intra_op_threads"].string_value == "0"
    assert config.parameters["max_tokens"].string_value == "77"
    assert modelconfig.detect_role(config) == role
    assert modelconfig.contract_problems(config, role) == []

    text = modelconfig.render_config(
        config, header="a header\nsecond line", comments=modelconfig.contract_comments(role)
    )
    assert text.startswith("# a header\n# second line\n")
    assert modelconfig.parse_config(text) == config
    # Triton's own text-format parser reads the same message.
    assert text_format.Parse(text, model_config_pb2.ModelConfig()) == config
    document = modelconfig.parse_document(text)
    assert document.header == "a header\nsecond line"
    assert document.comments == modelconfig.contract_comments(role)
    assert document.render() == text


def test_render_escapes_strings_and_renders_every_field_kind() -> None:
    config = modelconfig.build_config(_spec("text", parameters={"odd": 'quote " back\\ é\n'}))
    config.optimization.input_pinned_memory.enable = True
    config.instance_group[0].gpus.extend([0, 1])
    config.instance_group[0].kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert modelconfig.parse_config(modelconfig.render_config(config)) == config


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "bad name"},
        {"dimension": 0},
        {"max_batch_size": 0},
        {"preferred_batch_sizes": (16, 8)},
        {"preferred_batch_sizes": (64,)},
        {"instance_count": 0},
        {"max_queue_delay_us": -1},
    ],
)
def test_build_config_rejects_inconsistent_specs(kwargs: dict[str, Any]) -> None:
    values: dict[str, Any] = {"name": "m", "role": "text", "dimension": 512, **kwargs}
    with pytest.raises(modelconfig.ModelConfigError):
        modelconfig.build_config(modelconfig.ModelSpec(**values))


def test_contract_problems_name_what_is_wrong() -> None:
    config = modelconfig.build_config(_spec("text"))
    config.output[1].data_type = model_config_pb2.TYPE_INT64
    del config.output[2]
    config.max_batch_size = 0
    problems = modelconfig.contract_problems(config, "text")
    assert any("max_batch_size" in p for p in problems)
    assert any("TOKENS is TYPE_INT64" in p for p in problems)
    assert "missing output TRUNCATED" in problems


# --- existing repository ---------------------------------------------------------


def test_the_repository_has_the_expected_models() -> None:
    names = {p.name for p in EXISTING}
    assert {"minilm_l6_text", "efficientnet_lite0_conse", "ppocr_text", "minilm_maxsim_rerank"} <= names


@pytest.mark.parametrize("model_dir", EXISTING, ids=lambda p: p.name)
def test_every_existing_config_parses_and_matches_its_contract(model_dir: Path) -> None:
    config = modelconfig.read_config(model_dir)
    assert config.name == model_dir.name
    assert len(config.instance_group) >= 1
    role = modelconfig.detect_role(config)
    if role is not None:
        assert modelconfig.contract_problems(config, role) == []
    expected_roles = {
        "minilm_l6_text": "text",
        "efficientnet_lite0_conse": "image",
        "minilm_maxsim_rerank": "reranker",
        "ppocr_text": None,
        "aisfx_audio": None,
    }
    assert role == expected_roles.get(model_dir.name, role)
    # Two priority levels, expired requests rejected rather than executed (issue #10).
    assert modelconfig.queue_policy_problems(config) == []


def test_built_configs_get_the_queue_policy_and_it_is_idempotent() -> None:
    config = modelconfig.build_config(modelconfig.ModelSpec("enc", "text", dimension=8))
    assert modelconfig.queue_policy_problems(config) == []
    batching = config.dynamic_batching
    assert (batching.priority_levels, batching.default_priority_level) == (2, 2)
    assert batching.default_queue_policy.allow_timeout_override
    text = modelconfig.render_config(config)
    assert "timeout_action: REJECT" in text  # written although it is the enum's default
    bare = modelconfig.parse_document(text.replace("priority_levels: 2", "priority_levels: 0"))
    assert modelconfig.queue_policy_problems(bare.config)
    once = modelconfig.set_queue_policy(bare).render()
    assert modelconfig.set_queue_policy(modelconfig.parse_document(once)).render() == once
    assert modelconfig.queue_policy_problems(modelconfig.parse_config(once)) == []


@pytest.mark.parametrize("model_dir", EXISTING, ids=lambda p: p.name)
def test_every_existing_config_re_renders_to_the_same_message_and_text(model_dir: Path) -> None:
    text = (model_dir / "config.pbtxt").read_text()
    document = modelconfig.parse_document(text)
    rendered = document.render()
    assert modelconfig.parse_config(rendered) == document.config
    assert text_format.Parse(rendered, model_config_pb2.ModelConfig()) == document.config
    # The checked-in files are in the renderer's layout (`modelconfig.py format` keeps them so),
    # so a re-render changes nothing and keeps every comment line.
    assert rendered == text
    assert _comment_lines(rendered) == _comment_lines(text)
    assert modelconfig.main(["format", "--check", str(model_dir)]) == 0


@pytest.mark.parametrize("model_dir", EXISTING, ids=lambda p: p.name)
def test_set_instances_changes_only_the_instance_groups(model_dir: Path) -> None:
    original = modelconfig.read_document(model_dir)
    edited = modelconfig.set_instances(original, 3, "gpu", gpus=[0, 1])
    text = edited.render()
    new = modelconfig.parse_config(text)
    assert new == edited.config
    assert [(g.count, modelconfig.kind_name(g.kind), list(g.gpus)) for g in new.instance_group] == [
        (3, "KIND_GPU", [0, 1])
    ]
    old = model_config_pb2.ModelConfig()
    old.CopyFrom(original.config)
    del old.instance_group[:]
    del new.instance_group[:]
    assert new == old
    # Every comment is kept, and the text changes only inside instance_group.
    assert _comment_lines(text) == _comment_lines(original.render())
    assert _without_instance_group(text) == _without_instance_group(original.render())
    # Re-rendering is a fixed point.
    assert modelconfig.parse_document(text).render() == text


@pytest.mark.parametrize("model_dir", EXISTING, ids=lambda p: p.name)
def test_set_instances_threads_changes_only_that_parameter(model_dir: Path) -> None:
    original = modelconfig.read_document(model_dir)
    new = modelconfig.set_instances(original, 2, threads=5).config
    assert new.parameters["intra_op_threads"].string_value == "5"
    old = model_config_pb2.ModelConfig()
    old.CopyFrom(original.config)
    for config in (old, new):
        del config.instance_group[:]
        del config.parameters["intra_op_threads"]
    assert new == old


def _comment_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("#")]


def _without_instance_group(text: str) -> str:
    start = text.index("instance_group [")
    return text[:start] + text[text.index("\n]\n", start) + 3 :]


def test_set_instances_keeps_kind_and_threads_when_not_given() -> None:
    document = modelconfig.read_document(REPOSITORY / "minilm_l6_text")
    gpu = modelconfig.set_instances(document, 2, "gpu", gpus=[1])
    again = modelconfig.set_instances(modelconfig.parse_document(gpu.render()), 4)
    group = again.config.instance_group
    assert [(g.count, modelconfig.kind_name(g.kind), list(g.gpus)) for g in group] == [(4, "KIND_GPU", [1])]
    assert again.config.parameters["intra_op_threads"].string_value == "0"
    cpu = modelconfig.set_instances(again, 1, "cpu")
    assert [list(g.gpus) for g in cpu.config.instance_group] == [[]]
    with pytest.raises(modelconfig.ModelConfigError):
        modelconfig.set_instances(document, 1, "cpu", gpus=[0])
    with pytest.raises(modelconfig.ModelConfigError):
        modelconfig.set_instances(document, 0)


def test_hand_written_layout_is_re_rendered_with_its_comments() -> None:
    text = (
        '# header\nname: "x"  # trailing\nbackend: "python"\nmax_batch_size: 4\n'
        'instance_group { name: "g"  # in group\n count: 1 kind: KIND_CPU }\n'
        "instance_group [ { count: 2 kind: KIND_GPU } ]\n"
        "input { # one input\n name: 'A' data_type: TYPE_FP32 dims: [1] }\n"
        "# the end\n"
    )
    document = modelconfig.parse_document(text)
    assert document.header == "header"
    # A comment goes with the element it is in, else with the field after it (or the last field).
    assert document.comments == {
        "backend": "trailing",
        "instance_group.g": "in group",
        "input.A": "one input",
        "input": "the end",
    }
    edited = modelconfig.set_instances(document, 2, "cpu", threads=3)
    text = edited.render()
    config = modelconfig.parse_config(text)
    assert [(g.count, modelconfig.kind_name(g.kind)) for g in config.instance_group] == [(2, "KIND_CPU")]
    assert config.parameters["intra_op_threads"].string_value == "3"
    assert text.startswith("# header\n")
    again = modelconfig.parse_document(text)
    assert again.render() == text
    # The new group has no name, so its comment moves to the field; the new parameter gets one.
    assert again.comments == {
        "backend": "trailing",
        "instance_group": "in group",
        "input.A": "one input",
        "input": "the end",
        "parameters.intra_op_threads": modelconfig.THREADS_COMMENT,
    }


def test_rendering_never_drops_a_comment_and_is_a_fixed_point() -> None:
    config = modelconfig.build_config(_spec("text"))
    config.max_batch_size = 0  # the default; still written, with its comment
    comments = {
        "max_batch_size": "No batching.",
        "name": "Above the first field: read back as header.",
        "input.GONE": "An input that is not there: kept at `input`.",
        "nothing.at_all": "Kept in the header.",
        "parameters.intra_op_threads": "multi\n\nline  \n  indented",
        "output.TOKENS": 'odd # characters "quoted"',
    }
    text = modelconfig.render_config(config, header="top", comments=comments)
    assert "max_batch_size: 0" in text
    lines = {raw.strip() for raw in text.splitlines()}
    for comment in comments.values():
        assert all(f"# {line}".rstrip() in lines for line in comment.split("\n"))
    document = modelconfig.parse_document(text)
    assert document.config == config
    assert document.header == "\n".join(["top", comments["nothing.at_all"], comments["name"]])
    assert document.comments["input"] == comments["input.GONE"]
    assert document.comments["parameters.intra_op_threads"] == "multi\n\nline\n  indented"
    assert document.render() == text
    assert modelconfig.parse_document(document.render()).comments == document.comments


def test_cli_set_instances_format_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "minilm_maxsim_rerank"
    model.mkdir()
    source = (REPOSITORY / "minilm_maxsim_rerank" / "config.pbtxt").read_text()
    (model / "config.pbtxt").write_text(source)
    assert modelconfig.main(["set-instances", str(model), "--count", "2", "--threads", "1", "--dry-run"]) == 0
    assert (model / "config.pbtxt").read_text() == source
    assert "count: 2" in capsys.readouterr().out
    assert (
        modelconfig.main(["set-instances", str(model), "--count", "3", "--kind", "gpu", "--threads", "4"])
        == 0
    )
    config = modelconfig.read_config(model)
    assert [(g.count, modelconfig.kind_name(g.kind)) for g in config.instance_group] == [(3, "KIND_GPU")]
    assert config.parameters["intra_op_threads"].string_value == "4"
    capsys.readouterr()
    assert modelconfig.main(["show", str(model), str(REPOSITORY / "ppocr_text" / "config.pbtxt")]) == 0
    out = capsys.readouterr().out
    assert "instances: 3 x KIND_GPU" in out and "contract: reranker ok" in out
    assert modelconfig.main(["set-instances", str(tmp_path / "missing"), "--count", "1"]) == 1
    with pytest.raises(SystemExit):
        modelconfig.main(["set-instances", str(model), "--count", "0"])
    # format re-renders a hand-edited file into the renderer's layout, message unchanged.
    (model / "config.pbtxt").write_text(source.replace("\n\n", "\n").replace("  ", " "))
    assert modelconfig.main(["format", "--check", str(model)]) == 1
    assert modelconfig.main(["format", str(model)]) == 0
    assert (model / "config.pbtxt").read_text() == source
    assert modelconfig.main(["format", "--check", str(model)]) == 0


def test_cli_runs_as_a_script(tmp_path: Path) -> None:
    model = tmp_path / "ppocr_text"
    model.mkdir()
    (model / "config.pbtxt").write_text((REPOSITORY / "ppocr_text" / "config.pbtxt").read_text())
    command = [sys.executable, "scripts/modelconfig.py", "set-instances", str(model), "--count", "2"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "instances: 2 x KIND_CPU" in result.stdout
    assert [g.count for g in modelconfig.read_config(model).instance_group] == [2]


# --- export script (pure parts) -------------------------------------------------


def test_export_script_plans_without_torch() -> None:
    blocked = ["torch", "open_clip", "transformers", "onnx", "onnxruntime", "tokenizers", "PIL"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "sys.argv = ['x', '--plan']\n"
        "sys.path.insert(0, 'scripts')\n"  # as `python scripts/export_production_models.py` does
        "import runpy\n"
        "runpy.run_path('scripts/export_production_models.py', run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert 'name: "clip_image"' in result.stdout


def test_export_arguments_and_defaults() -> None:
    options = export.parse_args(["--out", "/tmp/repo"])
    assert (options.clip_model, options.pretrained) == ("ViT-B-32", "laion2b_s34b_b79k")
    assert options.cross_encoder == "cross-encoder/ms-marco-MiniLM-L-6-v2"
    assert (options.text_name, options.image_name, options.reranker_name) == (
        "clip_text",
        "clip_image",
        "crossencoder_rerank",
    )
    assert options.space == "clip@1" and options.verify and not options.plan_only
    siglip = export.parse_args(["--clip-model", "ViT-B-16-SigLIP", "--pretrained", "webli", "--kind", "gpu"])
    assert siglip.instance_kind == "gpu"
    for bad in (["--space", "clip"], ["--skip-clip", "--skip-reranker"], ["--text-name", "clip_image"]):
        with pytest.raises(SystemExit):
            export.parse_args(bad)


def test_export_plan_layout_and_configs() -> None:
    options = export.parse_args(["--out", "/tmp/repo", "--instances", "2", "--threads", "3"])
    planned = export.plan_models(options)
    assert [p.name for p in planned] == ["clip_text", "clip_image", "crossencoder_rerank"]
    layout = [path for p in planned for path in p.layout()]
    assert layout == [
        "clip_text/config.pbtxt",
        "clip_text/1/model.py",
        "clip_text/1/model.onnx",
        "clip_text/1/tokenizer.json",
        "clip_text/1/EXPORT.json",
        "clip_image/config.pbtxt",
        "clip_image/1/model.py",
        "clip_image/1/model.onnx",
        "clip_image/1/EXPORT.json",
        "crossencoder_rerank/config.pbtxt",
        "crossencoder_rerank/1/model.py",
        "crossencoder_rerank/1/model.onnx",
        "crossencoder_rerank/1/tokenizer.json",
        "crossencoder_rerank/1/EXPORT.json",
    ]
    for model in planned:
        assert (export.TEMPLATES / model.template).is_file()
        config = modelconfig.parse_config(model.render())
        assert config.name == model.name
        assert modelconfig.contract_problems(config, model.role) == []
        assert [(g.count, modelconfig.kind_name(g.kind)) for g in config.instance_group] == [(2, "KIND_CPU")]
        assert config.parameters["intra_op_threads"].string_value == "3"
    text, image, reranker = (modelconfig.parse_config(p.render()) for p in planned)
    assert modelconfig.embedding_dimension(text) == modelconfig.embedding_dimension(image) == 512
    assert text.parameters["context_length"].string_value == "77"
    assert text.parameters["text_clean"].string_value == "clip"
    assert image.parameters["image_mean"].string_value == "0.48145466,0.4578275,0.40821073"
    assert reranker.parameters["max_tokens"].string_value == "512"


def test_export_plan_for_siglip_and_overrides() -> None:
    options = export.parse_args(
        ["--clip-model", "ViT-B-16-SigLIP", "--pretrained", "webli", "--skip-reranker"]
    )
    text, image = export.plan_models(options)
    text_config = modelconfig.parse_config(text.render())
    assert modelconfig.embedding_dimension(text_config) == 768
    assert text_config.parameters["context_length"].string_value == "64"
    assert text_config.parameters["text_clean"].string_value == "canonicalize"
    assert modelconfig.parse_config(image.render()).parameters["image_std"].string_value == "0.5,0.5,0.5"
    # The export passes the facts read from the loaded model.
    facts = export.known_clip_facts("ViT-B-32", "openai")
    bigger = export.plan_models(options, export.ClipFacts(**{**facts.__dict__, "dimension": 1024}))
    assert modelconfig.embedding_dimension(modelconfig.parse_config(bigger[1].render())) == 1024
    with pytest.raises(SystemExit):
        export.known_clip_facts("MyArch", "x")
    assert export.known_clip_facts("MyArch", "x", 256).dimension == 256


def test_export_plan_cli_prints_configs_and_space(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert export.main(["--plan", "--out", "/tmp/repo"]) == 0
    out = capsys.readouterr().out
    assert 'name: "clip_text"' in out and 'name: "crossencoder_rerank"' in out
    assert "MMSEARCH_SPACES_FILE" in out and "set-instances" in out
    # The printed spaces file is one the embedder accepts.
    spaces = tmp_path / "spaces.json"
    printed, _ = json.JSONDecoder().raw_decode(out[out.index('{\n  "spaces"') :])
    spaces.write_text(json.dumps(printed))
    space = registry_from_file(spaces).resolve("")
    assert space.id == "clip@1" and space.dimension == 512
    assert space.encoder_for(common_pb2.MODALITY_IMAGE).model == "clip_image"  # type: ignore[union-attr]
