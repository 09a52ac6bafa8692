"""Every template has its thumbnail: ``workflows/<name>.jpg`` (the name ComfyUI's template
browser asks for), drawn by ``tools/make_thumbnails.py``."""

from __future__ import annotations

import sys

import pytest
from PIL import Image

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import make_thumbnails as mt

NAMES = sorted(p.stem for p in mt.WORKFLOWS.glob("*.json"))


@pytest.mark.parametrize("name", NAMES)
def test_template_has_a_jpeg_thumbnail(name):
    path = mt.WORKFLOWS / f"{name}.jpg"
    assert path.is_file(), f"no thumbnail {path.name}: run python tools/make_thumbnails.py"
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.size == mt.SIZE
    assert 5_000 < path.stat().st_size < 200_000


def test_no_thumbnail_without_a_template():
    assert sorted(p.stem for p in mt.WORKFLOWS.glob("*.jpg")) == NAMES


def test_thumbnail_follows_the_workflow():
    """Regions and batch items come from the API twin: shaded regions for inpainting, one strip
    per item for a batch (the picture differs from plain text-to-audio where the output does)."""
    assert mt._settings("07 Inpaint two regions")["regions"] == [(4.0, 8.0), (18.0, 24.0)]
    assert mt._settings("08 Continue a clip")["regions"] == [(10.0, None)]
    assert mt._settings("04 Batch of prompts and durations")["durations"] == [10.0, 20.0, 15.0]
    plain, inpaint = mt.render("01 Text to audio", "t"), mt.render("07 Inpaint two regions", "t")
    assert plain.size == inpaint.size == mt.SIZE and plain.tobytes() != inpaint.tobytes()
