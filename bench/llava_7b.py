"""The 7B-class VLM the GPU benchmarks build (no download): LLaVA with a CLIP ViT-L/14-336 vision tower and
a 32-layer, 4096-wide, 8-KV-head Llama decoder (vocab 92544), the tokenizer and processor of the demo
model, and the timer they share."""
from __future__ import annotations

import time

import torch


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> float:
    """Seconds `fn()` takes, CUDA-synchronised on both ends."""
    sync()
    started = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - started


def config(tokenizer):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    text = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=92544, max_position_embeddings=32768,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id)
    return LlavaConfig(vision_config=vision, text_config=text, image_seq_length=576,
                       image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                       vision_feature_select_strategy="default", vision_feature_layer=-2)


def processor(tokenizer):
    from transformers import CLIPImageProcessor, LlavaProcessor

    from core.models import demo_model

    return LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=demo_model.CHAT_TEMPLATE)


def build_on_gpu(tokenizer):
    """Random bf16 weights, initialised directly on the GPU (seconds, not minutes on the CPU)."""
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlavaForConditionalGeneration._from_config(config(tokenizer), dtype=torch.bfloat16).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
