"""Memory of decoding a hostile page, measured in a fresh process (RSS, not a guess).

A 50 KB PNG declaring a 7000 x 7000 grey page is within every limit. Before, the
OCR path converted it to RGB and copied it at full size before downscaling (peak
~470 MB over the interpreter), and glibc kept ~360 MB of it after the answer
(its mmap threshold had risen past the image buffers). Found by tests/fuzz."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = textwrap.dedent(
    """
    import json, sys
    from mmsearch.kit.media import ImageLimits, decode_image, ocr_pixels
    from mmsearch.kit.memory import fix_mmap_threshold
    from tests.fuzz.strategies import hostile_media

    def status_mb(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) / 1024

    def rss_mb():
        return status_mb("VmRSS:")

    page = hostile_media()[1]
    fix_mmap_threshold(1024 * 1024)
    before = rss_mb()
    for _ in range(3):
        image = decode_image(page, "", ImageLimits(20_000_000, 50_000_000), "images[0]", max_side=4096)
        pixels = ocr_pixels(image, 4096)
        shape = pixels.shape
        del image, pixels
    # VmHWM, not ru_maxrss: the latter survives exec, so it reports the forking
    # parent's size (pytest's, hundreds of MB into a full run) when that is larger.
    peak = status_mb("VmHWM:")
    print(json.dumps({"before": before, "peak": peak, "after": rss_mb(), "shape": shape}))
    """
)


def test_a_page_of_49_megapixels_decodes_for_ocr_within_bounded_memory_and_gives_it_back() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
        capture_output=True,
        check=True,
    )
    figures = json.loads(out.stdout)
    assert figures["shape"] == [4096, 4096, 3]
    # One 4096 x 4096 RGB result is 48 MB; the grey source 47 MB.
    assert figures["peak"] - figures["before"] < 250, figures
    assert figures["after"] - figures["before"] < 40, figures
