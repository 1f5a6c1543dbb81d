"""Model folders holding only a config.json, built by the tests: nothing is downloaded, no weight exists."""
from __future__ import annotations

import json
from pathlib import Path

# CLIP ViT-L/14 at 336 px, as the issue describes the XComposer-shaped test model's vision tower.
CLIP_L14_336 = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                "num_attention_heads": 16, "image_size": 336, "patch_size": 14}
# InternLM2-7B as XComposer2.5 uses it.
INTERNLM2_7B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 92544}


# The published internlm-xcomposer2d5-7b config.json (its keys and values; the auto_map names the folder's
# own code, which Loupe never runs).
XCOMPOSER2D5_7B_CONFIG = {
    "architectures": ["InternLMXComposer2ForCausalLM"], "model_type": "internlm2",
    "auto_map": {"AutoConfig": "configuration_internlm_xcomposer2.InternLMXcomposer2Config",
                 "AutoModel": "modeling_internlm_xcomposer2.InternLMXComposer2ForCausalLM",
                 "AutoModelForCausalLM": "modeling_internlm_xcomposer2.InternLMXComposer2ForCausalLM"},
    "attn_implementation": "flash_attention_2", "bias": False, "bos_token_id": 1, "eos_token_id": 2,
    "pad_token_id": 2, "hidden_act": "silu", "initializer_range": 0.02, "max_length": 16384,
    "max_position_embeddings": 24576, "rms_norm_eps": 1e-05, "rope_theta": 1000000,
    "rope_scaling": {"type": "dynamic", "factor": 2.0}, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "use_cache": True, **INTERNLM2_7B,
}


def xcomposer_folder(root: Path, *, vision: dict | None = None, **changes: object) -> Path:
    """The published InternLM-XComposer2.5-7B config.json (InternLM2-7B decoder); its CLIP ViT-L/14 is the
    one the model runs (560 px crops) unless `vision` (e.g. CLIP_L14_336) is written into the config."""
    folder = root / "internlm-xcomposer2d5-7b"
    folder.mkdir(parents=True, exist_ok=True)
    config = {**XCOMPOSER2D5_7B_CONFIG, **({"vision_config": vision} if vision else {}), **changes}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def llava_7b_folder(root: Path) -> Path:
    """The native transformers equivalent of the XComposer shape: LLaVA, CLIP ViT-L/14-336 + a Llama decoder."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    folder = root / "llava-7b-shaped"
    text = LlamaConfig(**INTERNLM2_7B, max_position_embeddings=24576)
    LlavaConfig(vision_config=CLIPVisionConfig(**CLIP_L14_336, projection_dim=768), text_config=text,
                image_seq_length=576).save_pretrained(folder)
    return folder


def tied_text_folder(root: Path) -> Path:
    """A tiny text-only Llama whose LM head shares the embedding weight."""
    from transformers import LlamaConfig

    folder = root / "tiny-tied-llama"
    LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True).save_pretrained(folder)
    return folder
