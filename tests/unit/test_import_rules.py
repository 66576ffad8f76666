"""scripts/check_imports.py: the package's import rules hold, and the check
fails on a cross-service import or a cycle (also a deferred one)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _checker() -> Any:
    spec = importlib.util.spec_from_file_location("check_imports", ROOT / "scripts/check_imports.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check_imports = _checker()


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "mmsearch", tmp_path / "mmsearch", ignore=shutil.ignore_patterns("v1", "__pycache__")
    )
    return tmp_path


def test_the_package_follows_its_import_rules() -> None:
    assert check_imports.check(ROOT) == []


def test_every_package_has_rules() -> None:
    packages = {p.name for p in (ROOT / "mmsearch").iterdir() if p.is_dir() and not p.name.startswith("_")}
    modules = {p.stem for p in (ROOT / "mmsearch").glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= set(check_imports.ALLOWED)


def test_a_cross_service_import_fails(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    target = root / "mmsearch/searcher/service.py"
    target.write_text(target.read_text() + "\nfrom mmsearch.indexer.plan import Planner  # noqa\n")
    problems = check_imports.check(root)
    assert len(problems) == 1
    assert "mmsearch.searcher must not import mmsearch.indexer.plan" in problems[0]


def test_the_kit_may_not_import_a_store(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    target = root / "mmsearch/kit/component.py"
    target.write_text(target.read_text() + "\nfrom mmsearch.stores.provider import StoreProvider  # noqa\n")
    assert any(
        "mmsearch.kit must not import mmsearch.stores.provider" in p for p in check_imports.check(root)
    )


def test_a_deferred_import_cycle_fails(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    # plan imports batch; a deferred import back from batch closes a cycle.
    batch = root / "mmsearch/indexer/batch.py"
    batch.write_text(
        batch.read_text() + "\n\ndef _late() -> None:\n    from mmsearch.indexer import plan  # noqa\n"
    )
    problems = check_imports.check(root)
    assert problems == ["import cycle: mmsearch.indexer.batch -> mmsearch.indexer.plan"]
