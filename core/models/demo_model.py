"""The embedded demo model: a tiny LLaVA (CLIP vision tower + Llama decoder) with random weights.

Built once, deterministically, into `<LOUPE_HOME>/models/demo-llava-v2`, then loaded back through the same
AutoModelForImageTextToText / AutoProcessor path a real model takes. Its answers are noise: it exists so
that every part of Loupe (and its tests) runs for real on a machine with no download and no GPU.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
import unicodedata
from pathlib import Path

DEMO_NAME = "demo-llava-v2"  # v2: no half-character tokens in answers
DEMO_LABEL = "demo weights — answers are noise"
_MARKER = "loupe-demo.json"

IMAGE_SIZE = 64
PATCH_SIZE = 16
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<image>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Enough English and Chinese for the byte-level BPE to learn common merges of both scripts.
_CORPUS = [
    "What is the title of the document in the image? The table has three columns and five rows.",
    "Is the signature at the bottom right? List four icons from left to right.",
    "The product label says 500 ml. The price is 39.9 yuan. Describe the photo in one sentence.",
    "图中表格第三列第一行的数值是多少？请按从左到右的顺序列出四个图标名称。",
    "这道题的已知条件和求解目标分别是什么？请分点说明。直角三角形ABC，∠C=90°。",
    "图中是否存在可能违反平台规范的内容？综合判断：当前内容符合电商平台规范。",
    "老师为什么说错了？正确答案是多少？商品标签上写着净含量和生产日期。",
    "审核结论：通过、需要复核或拒绝。理由：暴露、违禁品、夸大宣传如最便宜、第一。",
]


def demo_path(models_dir: Path) -> Path:
    return models_dir / DEMO_NAME


def is_demo(path: Path | str) -> bool:
    return (Path(path) / _MARKER).is_file()


def _unreadable(text: str) -> bool:
    """Part of a UTF-8 character ("�"), or a control character other than a line break."""
    return "\ufffd" in text or any(unicodedata.category(c) == "Cc" and c != "\n" for c in text)


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token=None,
        extra_special_tokens={"image_token": "<image>"},
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )


def build(target: Path) -> Path:
    """Build the demo model into `target` (atomically: a half-built folder is never left behind)."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    started = time.perf_counter()
    tokenizer = _build_tokenizer()
    vocab = len(tokenizer)
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32,
    )
    text = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    # Noise, but readable noise. Only the end-of-answer token stays among those that would not read as text:
    # part of a UTF-8 character (shows as "�", like an encoding bug), control characters (invisible junk),
    # special tokens (an <image> in an answer). Greedy answers never pick them (their LM head rows are zero,
    # so they score 0 against a positive best); sampled ones are stopped by the generation config.
    special = set(tokenizer.all_special_ids) | {tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    unreadable = [i for i in range(vocab) if i != tokenizer.eos_token_id
               and (i in special or _unreadable(tokenizer.decode([i])))]
    with torch.no_grad():
        model.lm_head.weight[unreadable] = 0
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, suppress_tokens=unreadable or None,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    # CLIP prepends a CLS token; "default" strategy drops it, so one extra token must be counted.
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DEMO_NAME}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / _MARKER).write_text(
            json.dumps({"name": DEMO_NAME, "build_s": round(time.perf_counter() - started, 3)}), encoding="utf-8"
        )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure(models_dir: Path) -> Path:
    """The demo model's folder, building it first if it is not there yet."""
    target = demo_path(models_dir)
    if not is_demo(target):
        build(target)
    return target
