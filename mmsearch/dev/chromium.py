"""`make chromium`: headless Chromium and its WebDriver for the console's browser
test, from Debian packages (pinned, sha256-checked, unpacked, not installed: no
root). The few shared libraries this machine image lacks come the same way;
wrappers put them on LD_LIBRARY_PATH.

    python -m mmsearch.dev.chromium     prints the browser's and the driver's paths
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from mmsearch.dev.debian import fetch_deb

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "chromium"
CHROMIUM = "150.0.7871.100-1~deb12u1"
# (package, version, sha256); Chromium's own three, then the libraries it links that the
# base image does not have (found with ldd; libpulse pulls libsndfile and its codecs).
DEBS = (
    ("chromium", CHROMIUM, "9eb054fb52bbcd7a8c6407484be2337298ff8b1e19af14af2e7b497fa190ce4f"),
    ("chromium-common", CHROMIUM, "31326f6b71ce20a52e7bea9792bf7135d4ff802e1cdbc250960b1b46729998d2"),
    ("chromium-driver", CHROMIUM, "aeb73e35cfe9784afaae740502141cf05fb310f8e5ab1c7d6a50aaa7d997ce6f"),
    ("libasyncns0", "0.8-6+b3", "cadaff99f4178b1f580331045621b363abaaefc994e78eecba1857774a3cead2"),
    ("libdouble-conversion3", "3.2.1-1", "802b880ed900e4a8d54bab77b7551a7f3408b04891c3e5650fdc2368cc1fbc0a"),
    ("libflac12", "1.4.2+ds-2", "4d8431c274eef13ec9ee2c0bf988c34b4342367dec053b7f69a432525be5b1fe"),
    (
        "libharfbuzz-subset0",
        "6.0.0+dfsg-3",
        "020de1eeba5fb56052a6ca71b259f8cbe3f6fce5038f4caca751c7e4867ca33f",
    ),
    ("libminizip1", "1.1-8+deb12u1", "b2999b980cbb9e6dcaa2d5154c9d1f1b9d55f5a0ca8166699de7ab47afaf4a36"),
    ("libmp3lame0", "3.100-6", "b1292c749172e7623547ecf684da57d3ec6ca22109f08b11bbb9e6be6e6beb95"),
    ("libmpg123-0", "1.31.2-1+deb12u1", "a10ad0d59995b859797a5f20d2833672051d0b2c7dab4c71f2e79258b2e3f631"),
    ("libogg0", "1.3.5-3", "f67acb0477aed0354f411172e37af338f3ac6bd4f3766134a2cf5539884b5a28"),
    (
        "libopenh264-7",
        "2.3.1+dfsg-3+deb12u2",
        "d453c4d81b7b3ff14663da75471250a4894543ae5ab5e902e225aca56aec56e8",
    ),
    ("libopenjp2-7", "2.5.0-2+deb12u3", "a127e2f1741d66bdddb6393a718e3cbec327d53f88c89b859b1f8d73f64cf635"),
    ("libopus0", "1.3.1-3", "c172e212f9039e741916aa8e12f3670d1e049dc0c16685325641288c2d83faa7"),
    ("libpulse0", "16.1+dfsg1-2+b1", "7b2c5403cb726312219aad678becc6d6adcee1d8694fdffce0b6ec15ae010831"),
    ("libsndfile1", "1.2.0-1+deb12u1", "02dc3f08fe8476e82e005f412e3b7289ff641180f33a9be8073f4bde61c85e8e"),
    ("libvorbis0a", "1.3.7-1", "01c14f9d1109650077a4c5c337c285476a6932d4d448f5a190c2b845724dbf21"),
    ("libvorbisenc2", "1.3.7-1", "75dd4d6f904c7db82f5112e60d8efea9e81dfedf94e970c5da7af2b3d81643c0"),
    (
        "libxnvctrl0",
        "525.85.05-3~deb12u1",
        "6fc26e4b6069f4648692e0c225f580161e3b0c04e4bac1c616c8a418a9a9817d",
    ),
)
WRAPPER = """#!/bin/sh
# {name} with the libraries unpacked beside it (see mmsearch/dev/chromium.py)
LD_LIBRARY_PATH="{lib}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" exec "{binary}" "$@"
"""


def _link(source: str, target: str) -> None:
    # Hard links: the merged tree costs no second copy of the ~300 MB browser.
    os.link(source, target)


def _has_any(root: Path) -> bool:
    return root.exists() and any(root.iterdir())


def install(cache: Path = CACHE) -> tuple[Path, Path]:
    """(chromium, chromedriver) wrappers, unpacking the packages the first time."""
    browser, driver = cache / "bin" / "chromium", cache / "bin" / "chromedriver"
    if browser.exists() and driver.exists():
        return browser, driver
    tree = cache.resolve() / "tree"  # every package merged: chromium finds its resources beside its binary
    shutil.rmtree(tree, ignore_errors=True)
    for package, version, sha256 in DEBS:
        unpacked = fetch_deb(
            cache / "debs" / package,
            package,
            version,
            deb_name=f"{package}_{version.replace(':', '%3a')}_amd64.deb",
            sha256=sha256,
            complete=_has_any,
        )
        shutil.copytree(unpacked, tree, dirs_exist_ok=True, copy_function=_link, symlinks=True)
    lib = f"{tree}/usr/lib/x86_64-linux-gnu:{tree}/usr/lib/x86_64-linux-gnu/pulseaudio"
    browser.parent.mkdir(parents=True, exist_ok=True)
    for wrapper, binary in (
        (browser, tree / "usr/lib/chromium/chromium"),
        (driver, tree / "usr/bin/chromedriver"),
    ):
        wrapper.write_text(WRAPPER.format(name=wrapper.name, lib=lib, binary=binary))
        wrapper.chmod(0o755)
    missing = subprocess.run(
        ["ldd", str(tree / "usr/lib/chromium/chromium")],
        env={**os.environ, "LD_LIBRARY_PATH": lib},
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    if "not found" in missing:
        browser.unlink()
        lacking = [line.strip() for line in missing.splitlines() if "not found" in line]
        raise SystemExit(f"chromium still lacks libraries: {lacking}")
    return browser, driver


if __name__ == "__main__":
    print(*install())
