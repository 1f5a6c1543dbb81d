"""The embedded demo model: deterministic, saved and loaded through the same Auto* path as a real model."""
from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path

from PIL import Image

from core.models import demo_model, model_source
from core.records import GenerationSettings
from core.settings import load_settings
from tests.image_factory import encode


def _digest(folder: Path) -> dict[str, str]:
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.iterdir())
        if f.name != "loupe-demo.json"  # holds the build time, which varies
    }


def test_build_is_deterministic(tmp_path: Path, demo_model_dir: Path) -> None:
    again = demo_model.build(tmp_path / "again")
    assert _digest(again) == _digest(demo_model_dir)
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= set(_digest(again))


def test_loads_through_auto_classes(demo_model_dir: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(demo_model_dir)
    processor = AutoProcessor.from_pretrained(demo_model_dir)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    text = "图中表格第三列的数值是多少？What is the total?"
    assert processor.tokenizer.decode(processor.tokenizer(text)["input_ids"]) == text


def test_image_token_count_matches_the_vision_tower(demo_model_dir: Path) -> None:
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(demo_model_dir)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
        add_generation_prompt=True, tokenize=False,
    )
    ids = processor(images=[Image.new("RGB", (90, 50))], text=prompt)["input_ids"][0]
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    # 64 px / 16 px patches = 16 tokens; CLIP's CLS token is dropped by the "default" strategy.
    assert list(ids).count(image_id) == 16


def test_no_model_configured_means_the_demo(loupe_home: Path) -> None:
    source = model_source.resolve(load_settings())
    assert source.is_demo and source.path == loupe_home.resolve() / "models" / demo_model.DEMO_NAME


def test_demo_is_built_when_missing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "fresh"))
    source = model_source.resolve(load_settings())
    assert demo_model.is_demo(source.path) and (source.path / "model.safetensors").is_file()


def test_answers_are_readable_noise(engine) -> None:
    """No half-characters ("�") or control characters, greedy (the fast path) or sampled (generate())."""
    image = encode(Image.new("RGB", (200, 120), "teal"), "PNG")
    for settings in (GenerationSettings(max_new_tokens=200), GenerationSettings(max_new_tokens=200, do_sample=True,
                                                                                  temperature=1.5, seed=3)):
        text = engine.ask([image], "图中有什么？", settings).collect().text
        assert text and "\ufffd" not in text, text
        assert not any(unicodedata.category(c) == "Cc" and c != "\n" for c in text), repr(text)
