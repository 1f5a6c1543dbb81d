"""How many LLM tokens an image becomes in InternLM-XComposer2.5, from its size alone.

The model's HD transform turns the image landscape (transposing a portrait one), picks the largest `scale`
with scale · ceil(scale / aspect) ≤ hd_num (at most ceil(width / 560)), resizes it to scale · 560 px wide
and pads the bottom with white to a multiple of 560: an h × w grid of 560-px crops (in the image's own
orientation) plus one global view. Each crop's 40 × 40 CLIP patches are merged 2 × 2 into 20 × 20 tokens; a
separator token ends every row of tokens (sub-crops and the global view) and one sits between the views:
(h·w + 1)·400 + 1 + (h + 1)·20 tokens. `hd_num` is 24 for a question with one image and 6 for each of several.
"""
from __future__ import annotations

import math

XCOMPOSER_HD_NUM = 24  # crops for one image in the model's chat(); it forces 6 per image with several
XCOMPOSER_MULTI_HD_NUM = 6
CROP_SIDE = 560
PATCH = 14


def hd_num_for(image_count: int) -> int:
    """The crop budget each image gets in a question with `image_count` images, as the model's chat() sets it."""
    return XCOMPOSER_MULTI_HD_NUM if image_count > 1 else XCOMPOSER_HD_NUM


def hd_grid(width: int, height: int, hd_num: int, side: int = CROP_SIDE) -> tuple[int, int]:
    """(rows, columns) of `side`-px crops the HD transform makes of a width × height image."""
    if width <= 0 or height <= 0:
        raise ValueError(f"an image of {width}x{height} pixels has no crops")
    portrait = width < height
    long_side, short_side = (height, width) if portrait else (width, height)
    aspect = long_side / short_side
    scale = 1
    while (scale + 1) * math.ceil((scale + 1) / aspect) <= hd_num:
        scale += 1
    scale = min(math.ceil(long_side / side), scale)
    resized_short = int(scale * side / aspect)  # truncated, as the model's own int() does
    across = max(1, math.ceil(resized_short / side))
    return (scale, across) if portrait else (across, scale)


def image_token_count(width: int, height: int, hd_num: int, *, side: int = CROP_SIDE, patch: int = PATCH) -> int:
    """LLM tokens of one width × height image at this crop budget (2,861 for 1280 × 720 at hd_num 24)."""
    grid = side // patch // 2
    rows, cols = hd_grid(width, height, hd_num, side)
    return (rows * cols + 1) * grid * grid + 1 + (rows + 1) * grid


def xcomposer_image_tokens(side: int, patch: int, hd_num: int) -> tuple[int, int]:
    """(LLM tokens, crops) of one image at most, over every grid the crop budget allows."""
    grid = side // patch // 2
    per_crop = grid * grid
    return max(((h * w + 1) * per_crop + 1 + (h + 1) * grid, h * w + 1)
               for h in range(1, hd_num + 1) for w in range(1, hd_num // h + 1))
