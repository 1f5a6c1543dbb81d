"""Turn uploaded bytes into the RGB image the model will see, and say what was done to it.

Decisions: only JPEG, PNG, WebP, BMP, GIF and TIFF are accepted; images are never upscaled; 16-bit
images are scaled down to 8 bits (not clipped); transparency is flattened onto white; animations
keep their first frame. The pixel budget is checked from the header, before any pixel is decoded.
"""
from __future__ import annotations

import hashlib
import io
import time
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ImageError
from core.messages import Message, MessageText
from core.records import PreparedImage

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
DEFAULT_MAX_WIDTH = 1280
DEFAULT_MAX_PIXELS = 90_000_000

_EXIF_ORIENTATION_TAG = 0x0112
_ORIENTATION_NOTES = {
    2: MessageText("image.exif_mirrored_left_right", "mirrored left–right from EXIF (orientation 2)"),
    3: MessageText("image.exif_rotated_180", "rotated 180° from EXIF (orientation 3)"),
    4: MessageText("image.exif_mirrored_top_bottom", "mirrored top–bottom from EXIF (orientation 4)"),
    5: MessageText("image.exif_mirrored_rotated_90", "mirrored and rotated 90° from EXIF (orientation 5)"),
    6: MessageText("image.exif_rotated_90", "rotated 90° from EXIF (orientation 6)"),
    7: MessageText("image.exif_mirrored_rotated_270", "mirrored and rotated 270° from EXIF (orientation 7)"),
    8: MessageText("image.exif_rotated_270", "rotated 270° from EXIF (orientation 8)"),
}
EMPTY_FILE = MessageText("image.empty_file", "The file is empty.")
NOT_AN_IMAGE = MessageText("image.not_an_image",
                           "This file is not an image Loupe can read (accepted: JPEG, PNG, WebP, BMP, GIF, TIFF).")
BOMB = MessageText("image.too_many_pixels_to_open",
                   "This image has too many pixels to open safely (a possible decompression bomb).")
DAMAGED = MessageText("image.damaged", "This image file is damaged and cannot be read ({reason}).")
NO_PIXELS = MessageText("image.no_pixels", "This image has no pixels.")
OVER_PIXEL_LIMIT = MessageText("image.over_pixel_limit",
                               "This image is {width}×{height} ({megapixels:.0f} megapixels); "
                               "the limit is {limit:.0f} megapixels. Please downscale it first.")
TRUNCATED = MessageText("image.truncated", "This image file is truncated or damaged and cannot be read ({reason}).")
HIGH_BIT_DEPTH = MessageText("image.high_bit_depth", "converted {mode} (high bit depth) to 8-bit RGB")
CMYK = MessageText("image.cmyk", "converted CMYK to RGB")
TRANSPARENCY = MessageText("image.transparency", "transparent areas filled with white")
ANIMATED = MessageText("image.animated", "animated image with {frames} frames: using the first frame")
RESIZED = MessageText("image.resized", "resized {width}×{height} → {new_width}×{new_height}")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageError(EMPTY_FILE())
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice its limit; our budget is the rule.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
    except UnidentifiedImageError:
        raise ImageError(NOT_AN_IMAGE()) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(BOMB()) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(DAMAGED(reason=str(exc))) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(NO_PIXELS())
    if width * height > max_pixels:
        raise ImageError(OVER_PIXEL_LIMIT(width=width, height=height, megapixels=width * height / 1e6,
                                          limit=max_pixels / 1e6))
    return image


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale images: scale the full range to 0..255 instead of clipping."""
    array = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
    if image.mode == "F":
        top = max(float(array.max(initial=0)), 1.0)
    scaled = np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled)  # 2-D uint8 → mode "L"


def _to_rgb(image: Image.Image, notes: list[Message]) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        notes.append(HIGH_BIT_DEPTH(mode=mode))
        return _to_8bit(image).convert("RGB")
    if mode == "CMYK":
        notes.append(CMYK())
        return image.convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] < 255:  # type: ignore[operator]  # one band: (min, max) ints
            notes.append(TRANSPARENCY())
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def prepare(
    data: bytes,
    *,
    max_width: int = DEFAULT_MAX_WIDTH,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PreparedImage:
    """Decode, orient, convert and (if wider than max_width) shrink one uploaded image."""
    started = time.perf_counter()
    image = _open(data, max_pixels)
    source_format = image.format or "unknown"
    notes: list[Message] = []
    frames = getattr(image, "n_frames", 1)
    try:
        if frames > 1:
            image.seek(0)
            notes.append(ANIMATED(frames=frames))
        orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        image.load()
        if orientation in _ORIENTATION_NOTES:
            image = ImageOps.exif_transpose(image)
            notes.append(_ORIENTATION_NOTES[orientation]())
        image = _to_rgb(image, notes)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(TRUNCATED(reason=str(exc))) from None
    original_size = image.size
    if image.width > max_width:
        height = max(1, round(image.height * max_width / image.width))
        notes.append(RESIZED(width=image.width, height=image.height, new_width=max_width, new_height=height))
        image = image.resize((max_width, height), Image.Resampling.LANCZOS)
    return PreparedImage(
        image=image,
        notes=tuple(note.text for note in notes),
        note_messages=tuple(notes),
        source_format=source_format,
        original_size=original_size,
        sha256=hashlib.sha256(data).hexdigest(),
        prepare_s=time.perf_counter() - started,
    )
