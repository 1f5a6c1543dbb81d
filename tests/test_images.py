"""Image preparation: every accepted format, all 8 EXIF orientations, odd modes, and every refusal."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.errors import ImageError
from core.inputs import images
from tests.image_factory import encode, jpeg_with_orientation, marker_image


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_each_accepted_format_becomes_rgb(fmt: str) -> None:
    prepared = images.prepare(encode(marker_image(), fmt))
    assert prepared.image.mode == "RGB"
    assert (prepared.width, prepared.height) == (60, 40)
    assert prepared.source_format == fmt
    assert len(prepared.sha256) == 64


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_undone(orientation: int) -> None:
    prepared = images.prepare(jpeg_with_orientation(orientation))
    assert (prepared.width, prepared.height) == (60, 40)
    red, white = prepared.image.getpixel((3, 3)), prepared.image.getpixel((56, 36))
    assert red[0] > 200 and red[1] < 60, f"orientation {orientation}: marker not top-left ({red})"
    assert min(white) > 200
    assert bool(prepared.notes) == (orientation != 1)
    if orientation == 6:
        assert prepared.notes == ("rotated 90° from EXIF (orientation 6)",)


def test_cmyk_is_converted() -> None:
    prepared = images.prepare(encode(Image.new("CMYK", (10, 10), (0, 255, 255, 0)), "JPEG"))
    assert prepared.image.mode == "RGB"
    assert "converted CMYK to RGB" in prepared.notes
    r, g, b = prepared.image.getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60


def test_16_bit_is_scaled_not_clipped() -> None:
    gradient = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(1, 64).repeat(8, axis=0)
    prepared = images.prepare(encode(Image.fromarray(gradient), "PNG"))
    row = [prepared.image.getpixel((x, 0))[0] for x in range(64)]
    assert row[0] == 0 and row[-1] == 255
    assert 110 < row[32] < 145, "mid-grey must stay mid-grey, not saturate to white"
    assert any("high bit depth" in note for note in prepared.notes)


def test_palette_transparency_goes_on_white() -> None:
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    image.paste(1, (0, 0, 5, 10))
    data = encode(image, "PNG", transparency=0)
    prepared = images.prepare(data)
    assert prepared.image.getpixel((8, 5)) == (255, 255, 255)  # transparent blue → white
    assert prepared.image.getpixel((2, 5)) == (255, 0, 0)
    assert "transparent areas filled with white" in prepared.notes


def test_rgba_half_transparent_blends_on_white() -> None:
    prepared = images.prepare(encode(Image.new("RGBA", (4, 4), (0, 0, 0, 128)), "PNG"))
    assert all(120 <= c <= 135 for c in prepared.image.getpixel((1, 1)))


def test_animation_keeps_first_frame_and_says_so() -> None:
    frames = [Image.new("RGB", (20, 20), colour) for colour in ("red", "lime", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    prepared = images.prepare(data)
    assert prepared.image.getpixel((10, 10))[0] > 200
    assert prepared.notes == ("animated image with 3 frames: using the first frame",)


def test_wide_image_is_resized_keeping_aspect() -> None:
    prepared = images.prepare(encode(Image.new("RGB", (4032, 3024)), "JPEG"))
    assert (prepared.width, prepared.height) == (1280, 960)
    assert prepared.notes == ("resized 4032×3024 → 1280×960",)
    assert prepared.original_size == (4032, 3024)


def test_max_width_setting_and_never_upscale() -> None:
    assert images.prepare(encode(Image.new("RGB", (800, 400)), "PNG"), max_width=400).height == 200
    small = images.prepare(encode(Image.new("RGB", (300, 200)), "PNG"))
    assert (small.width, small.height) == (300, 200) and small.notes == ()


def test_rotation_happens_before_resize() -> None:
    # A phone photo stored landscape but tagged portrait: width after rotation is what is limited.
    stored = Image.new("RGB", (3000, 2000))
    exif = Image.Exif()
    exif[0x0112] = 6
    prepared = images.prepare(encode(stored, "JPEG", exif=exif))
    assert (prepared.width, prepared.height) == (1280, 1920)
    assert prepared.notes[0].startswith("rotated 90°")


@pytest.mark.parametrize(
    ("data", "phrase"),
    [
        (b"", "empty"),
        (b"%PDF-1.4 not an image at all", "not an image"),
        ("图片".encode() * 50, "not an image"),
    ],
)
def test_non_images_are_refused(data: bytes, phrase: str) -> None:
    with pytest.raises(ImageError, match=phrase):
        images.prepare(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_refused(fmt: str) -> None:
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    with pytest.raises(ImageError, match="truncated|damaged"):
        images.prepare(data[: len(data) // 2])


def test_unsupported_format_is_refused() -> None:
    with pytest.raises(ImageError, match="accepted: JPEG"):
        images.prepare(encode(Image.new("RGB", (16, 16)), "ICO"))


def test_pixel_budget_refuses_before_decoding() -> None:
    data = encode(Image.new("L", (5000, 5000)), "PNG")
    with pytest.raises(ImageError, match=r"\(25 megapixels\); the limit is 10 megapixels"):
        images.prepare(data, max_pixels=10_000_000)


def test_pillow_bomb_guard_becomes_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="decompression bomb"):
        images.prepare(encode(Image.new("RGB", (100, 100)), "PNG"))
