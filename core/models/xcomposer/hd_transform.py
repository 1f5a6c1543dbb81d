"""XComposer2.5's high-resolution transform of one image, as pure functions (no model needed).

A landscape image keeps its orientation, a portrait one is transposed first and back at the end. `scale`
is the largest s with s·ceil(s / ratio) ≤ hd_num, capped at ceil(width / 560); the image is resized
(bilinear, as torchvision resizes a PIL image) to width scale·560 keeping its aspect, and its bottom (its
right side for a portrait) is padded with white to a multiple of 560. The model then sees a 560×560 global
view plus the h×w grid of 560-pixel crops. Pixels are normalised with CLIP's mean and std.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    import torch

CROP = 560
ONE_IMAGE_HD_NUM = 24  # chat()'s hd_num for one image
SEVERAL_IMAGES_HD_NUM = 6  # what chat() forces for each image when there are several
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
GRID = 20  # a crop's 40×40 CLIP patches merged 2×2


@dataclass(frozen=True)
class HdGrid:
    """How an image is cut: rows × columns of 560-px crops, and the size it is resized to before padding."""

    rows: int
    columns: int
    resized: tuple[int, int]  # (width, height) after the resize, before the white padding

    @property
    def image_tokens(self) -> int:
        """Tokens the decoder sees for this image: global + crops (400 each), one separator per grid row."""
        return (self.rows * self.columns + 1) * GRID * GRID + 1 + (self.rows + 1) * GRID


def hd_num_for(images: int) -> int:
    return ONE_IMAGE_HD_NUM if images <= 1 else SEVERAL_IMAGES_HD_NUM


def hd_grid(width: int, height: int, hd_num: int) -> HdGrid:
    """The crop grid of a width×height image at hd_num."""
    portrait = width < height
    if portrait:
        width, height = height, width
    ratio = width / height
    scale = 1
    while scale * math.ceil(scale / ratio) <= hd_num:
        scale += 1
    scale = min(math.ceil(width / CROP), scale - 1)
    new_w = int(scale * CROP)
    new_h = int(new_w / ratio)
    rows, columns = math.ceil(new_h / CROP), scale
    if portrait:
        return HdGrid(columns, rows, (new_h, new_w))
    return HdGrid(rows, columns, (new_w, new_h))


def hd_image(image: Image.Image, hd_num: int) -> Image.Image:
    """The resized, white-padded RGB image whose sides are multiples of 560."""
    image = image.convert("RGB")
    portrait = image.width < image.height
    if portrait:  # resized in the transposed frame, as the model's code does: PIL's two passes round in that order
        image = image.transpose(Image.Transpose.TRANSPOSE)
    grid = hd_grid(image.width, image.height, hd_num)
    resized = image.resize(grid.resized, Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (grid.columns * CROP, grid.rows * CROP), (255, 255, 255))
    canvas.paste(resized, (0, 0))
    return canvas.transpose(Image.Transpose.TRANSPOSE) if portrait else canvas


def hd_pixels(image: Image.Image, hd_num: int) -> torch.Tensor:
    """[1, 3, H, W] float32, CLIP-normalised, of the HD-transformed image."""
    import numpy as np
    import torch

    array = np.asarray(hd_image(image, hd_num), dtype=np.float32) / 255.0
    pixels = torch.from_numpy(array).permute(2, 0, 1)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return ((pixels - mean) / std).unsqueeze(0).contiguous()
