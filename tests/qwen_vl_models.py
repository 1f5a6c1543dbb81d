"""Tiny Qwen2-VL / Qwen2.5-VL models (M-RoPE decoders) and prompts for them, built from configs with seeded random
weights (nothing downloaded): the CPU tests use the default sizes, the GPU tests a head_dim of 128."""
from __future__ import annotations

from typing import Any

import torch

IMAGE, VIDEO, START, END = 250, 251, 252, 253
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=256, max_position_embeddings=2048)
PATCH = 4


def qwen_vl(kind: str, text: dict[str, Any] | None = None, sections: tuple[int, int, int] = (2, 3, 3),
            patch: int = PATCH) -> Any:
    """An eval-mode Qwen2.5-VL ("qwen2_5_vl") or Qwen2-VL ("qwen2_vl"); `sections` sum to head_dim / 2."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": list(sections)}
    text_config = {**(text or TINY_TEXT), "rope_parameters": rope}
    ids = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START, vision_end_token_id=END)
    width = text_config["hidden_size"]
    torch.manual_seed(0)
    if kind == "qwen2_5_vl":
        vision = dict(depth=2, hidden_size=32, out_hidden_size=width, num_heads=2, intermediate_size=64,
                      patch_size=patch, spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[1],
                      window_size=4 * patch)
        return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text_config, vision_config=vision,
                                                                   **ids)).eval()
    vision = dict(depth=2, embed_dim=32, hidden_size=width, num_heads=2, mlp_ratio=2, patch_size=patch,
                  spatial_merge_size=2, temporal_patch_size=2)
    return Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text_config, vision_config=vision, **ids)).eval()


def qwen_vl_prompts(patch: int = PATCH, words: int = 1) -> list[dict[str, torch.Tensor]]:
    """Three prompts: two images of different grids (so different 3-D positions), one without an image; each
    prompt's text `words` times as long."""
    prompts = []
    for number, (grid, text) in enumerate((((1, 4, 8), [5, 6, 7]), ((1, 6, 4), [9, 10, 11, 12]), (None, [20, 21]))):
        torch.manual_seed(number)
        text = text * words
        if grid is None:
            ids = torch.tensor([[1, 2, *text]])
            prompts.append(dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                                mm_token_type_ids=torch.zeros_like(ids)))
            continue
        patches = grid[0] * grid[1] * grid[2]
        ids = torch.tensor([[1, 2, START, *[IMAGE] * (patches // 4), END, *text]])
        prompts.append(dict(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=(ids == IMAGE).long(),
                            pixel_values=torch.randn(patches, 3 * 2 * patch * patch), image_grid_thw=torch.tensor([grid])))
    return prompts
