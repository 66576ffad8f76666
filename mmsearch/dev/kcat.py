"""`make kcat`: a kcat that talks to the local stack's broker, for producers
that are not Python (the README's example, and the e2e test that runs it).

Debian's kcat 1.7.1 links librdkafka 2.0.2, which fails against the local
Kafka-protocol broker ("ApiVersionRequest failed: Local: Read underflow");
librdkafka 2.16 works. So: Debian's kcat and libyajl2 (pinned, sha256-checked,
unpacked, not installed) run against the self-contained librdkafka 2.16 from
the confluent-kafka wheel (hash-pinned, downloaded, not installed), through a
wrapper script at .cache/kcat/bin/kcat. Against a real Kafka, any kcat works.

    python -m mmsearch.dev.kcat     prints the wrapper's path
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from functools import partial
from pathlib import Path

from mmsearch.dev.debian import fetch_deb

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "kcat"
REQUIREMENTS = ROOT / "requirements" / "kcat.txt"
DEBS = (
    ("kcat", "1.7.1-2", "c7634113d7db8e9ca840f7f865afd1d13b43014f2dcf591ed3b5744de80030d3", "usr/bin/kcat"),
    (
        "libyajl2",
        "2.1.0-3+deb12u2",
        "b512a6efbe735e7c731185a1b3ea477ff306f0c3f6aa2970e85b12f01fe8063b",
        "usr/lib/x86_64-linux-gnu/libyajl.so.2",
    ),
)
WRAPPER = """#!/bin/sh
# kcat with librdkafka 2.16 (see mmsearch/dev/kcat.py)
LD_LIBRARY_PATH="{lib}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" exec "{binary}" "$@"
"""


def _has(root: Path, *, member: str) -> bool:
    return (root / member).exists()


def install(cache: Path = CACHE) -> Path:
    wrapper = cache / "bin" / "kcat"
    if wrapper.exists():
        return wrapper
    lib = cache / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    roots = {}
    for package, version, sha256, member in DEBS:
        arch_name = f"{package}_{version.replace(':', '%3a')}_amd64.deb"
        roots[package] = fetch_deb(
            cache / package,
            package,
            version,
            deb_name=arch_name,
            sha256=sha256,
            complete=partial(_has, member=member),
        )
    yajl = roots["libyajl2"] / DEBS[1][3]
    shutil.copy2(yajl.resolve(), lib / "libyajl.so.2")
    wheels = cache / "wheels"
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes"]
    subprocess.run([*command, "-r", str(REQUIREMENTS), "-d", str(wheels)], check=True)
    (wheel,) = wheels.glob("confluent_kafka-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (member,) = [n for n in archive.namelist() if n.startswith("confluent_kafka.libs/librdkafka")]
        (lib / "librdkafka.so.1").write_bytes(archive.read(member))
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(WRAPPER.format(lib=lib, binary=roots["kcat"] / "usr/bin/kcat"))
    wrapper.chmod(0o755)
    return wrapper


if __name__ == "__main__":
    print(install())
