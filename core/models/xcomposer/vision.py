"""The image side of XComposer2.5: CLIP ViT-L/14 at 560 px, the 2×2 patch merge, the separator embeddings
and the projector, in the model code's order (one module, so the stage clock times CLIP + projector as
"vision").

For one HD-transformed image (h×w crops): CLIP runs on the 560×560 global view (bicubic resize of the whole
padded image) followed by the crops in row-major order; the last layer's patch features (CLS dropped, no
post-layernorm) are merged 2×2 into 20×20 tokens of 4×1024 (channel order: row offset, column offset,
feature). The global view's 20 rows each end with `plora_sub_GN`, then one `plora_glb_GN`, then the crops
laid out as one (h·20)×(w·20) grid whose rows again end with `plora_sub_GN`. The projector
(Linear 4096→4096, GELU, Linear) maps all of it to the decoder's width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.models.xcomposer.hd_transform import CROP
from core.models.xcomposer.spec import XComposerSpec


class VisionTower(nn.Module):
    """Holds the CLIP model under the published name `vit.vision_tower`."""

    def __init__(self, spec: XComposerSpec) -> None:
        super().__init__()
        from transformers import CLIPVisionModel

        self.vision_tower = CLIPVisionModel(spec.clip_config())


def _merge_2x2(features: torch.Tensor) -> torch.Tensor:
    """[n, side², C] → [n, side/2, side/2, 4C]: each 2×2 block of patches concatenated."""
    n, count, channels = features.shape
    side = int(round(count ** 0.5))
    blocks = features.reshape(n, side // 2, 2, side // 2, 2, channels).permute(0, 1, 3, 2, 4, 5)
    return blocks.reshape(n, side // 2, side // 2, 4 * channels)


class ImageEncoder(nn.Module):
    """CLIP + merge + separators + projector: pixels of one HD image → its decoder embeddings."""

    def __init__(self, spec: XComposerSpec) -> None:
        super().__init__()
        merged = 4 * spec.clip_config().hidden_size
        self.vit = VisionTower(spec)
        self.vision_proj = nn.Sequential(nn.Linear(merged, spec.hidden), nn.GELU(), nn.Linear(spec.hidden, spec.hidden))
        self.plora_glb_GN = nn.Parameter(torch.zeros(1, 1, merged))
        self.plora_sub_GN = nn.Parameter(torch.zeros(1, 1, 1, merged))

    def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each [1, 3, rows·560, columns·560] normalised image → [1, image tokens, hidden]."""
        return [self._one(pixels) for pixels in images]

    def _one(self, pixels: torch.Tensor) -> torch.Tensor:
        clip = self.vit.vision_tower
        weight = self.plora_glb_GN  # where and in which dtype the image encoder runs
        _, _, height, width = pixels.shape
        rows, columns = height // CROP, width // CROP
        crops = (pixels.reshape(1, 3, rows, CROP, columns, CROP).permute(0, 2, 4, 1, 3, 5)
                 .reshape(-1, 3, CROP, CROP))
        glb = F.interpolate(pixels.float(), size=(CROP, CROP), mode="bicubic").to(crops.dtype)
        views = torch.cat([glb, crops]).to(device=weight.device, dtype=weight.dtype)
        features = clip(pixel_values=views).last_hidden_state[:, 1:]
        merged = _merge_2x2(features)  # [1 + rows·columns, 20, 20, 4C]
        grid = merged.shape[1]
        sub_gn = self.plora_sub_GN.to(merged.dtype)
        glb_part = torch.cat([merged[:1], sub_gn.expand(1, grid, 1, -1)], dim=2).reshape(1, -1, merged.shape[-1])
        tiles = (merged[1:].reshape(1, rows, columns, grid, grid, -1).permute(0, 1, 3, 2, 4, 5)
                 .reshape(1, rows * grid, columns * grid, -1))
        sub_part = torch.cat([tiles, sub_gn.expand(1, rows * grid, 1, -1)], dim=2).reshape(1, -1, merged.shape[-1])
        tokens = torch.cat([glb_part, self.plora_glb_GN.to(merged.dtype), sub_part], dim=1)
        return self.vision_proj(tokens)
