"""Images the tests make themselves: every format, EXIF orientation, mode and failure case."""
from __future__ import annotations

import io

from PIL import Image


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def marker_image(width: int = 60, height: int = 40) -> Image.Image:
    """White image with a red block in the top-left corner, so orientation can be checked by pixel."""
    image = Image.new("RGB", (width, height), "white")
    image.paste((255, 0, 0), (0, 0, width // 4, height // 4))
    return image


# The transform a camera "applied" for each orientation: the inverse of what exif_transpose undoes.
_STORED_AS = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def jpeg_with_orientation(orientation: int) -> bytes:
    """A JPEG whose pixels are stored turned, with the EXIF tag that says how to turn them back."""
    stored = marker_image()
    if _STORED_AS[orientation] is not None:
        stored = stored.transpose(_STORED_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", exif=exif, quality=95)
