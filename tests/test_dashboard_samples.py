"""The sample images: committed, each showing the preparation step it is there for, and regenerated
byte for byte by assets/make_samples.py (with the CJK font it draws Chinese with)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.inputs import images, samples

ROOT = Path(__file__).resolve().parent.parent
FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


@pytest.mark.parametrize(("sample_id", "size", "notes"), [
    ("document-table", (1240, 860), ()),
    ("homework-geometry", (1080, 1350), ("rotated 90° from EXIF (orientation 6)",)),
    ("product-router", (1280, 720), ("resized 1920×1080 → 1280×720",)),
])
def test_each_committed_sample_shows_its_preparation_step(sample_id: str, size, notes) -> None:
    sample = samples.by_id(sample_id)
    prepared = images.prepare(sample.read())
    assert prepared.image.size == size and prepared.notes == notes


def test_every_scenario_offers_its_own_sample_first() -> None:
    assert samples.for_scenario("documents")[0].id == "document-table"
    assert samples.for_scenario("education")[0].id == "homework-geometry"
    assert samples.for_scenario("moderation")[0].id == "product-router"
    assert len(samples.for_scenario("general")) == len(samples.SAMPLES)


@pytest.mark.skipif(not FONT.exists(), reason="fonts-noto-cjk is not installed (make test installs it)")
def test_the_script_regenerates_the_same_bytes_every_time(tmp_path: Path) -> None:
    for run in ("a", "b"):
        subprocess.run([sys.executable, str(ROOT / "assets" / "make_samples.py"), str(tmp_path / run)], check=True,
                       capture_output=True)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(s.file for s in samples.SAMPLES)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        with Image.open(tmp_path / "a" / name) as made, Image.open(samples.SAMPLES_DIR / name) as committed:
            assert made.size == committed.size and made.format == committed.format
