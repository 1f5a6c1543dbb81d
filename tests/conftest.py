"""Shared fixtures: every test gets its own LOUPE_HOME; the demo model is built once per test run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from core.models import demo_model

if not torch.cuda.is_available():
    # Loupe's own Triton kernel (core/models/split_decode_attention.py) runs under Triton's interpreter on a
    # CPU; the variable must be set before the kernel is defined (at its module's import).
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real demo model, built once through the real build code."""
    return demo_model.build(tmp_path_factory.mktemp("models") / demo_model.DEMO_NAME)


@pytest.fixture(scope="session")
def float32_demo_answer(demo_model_dir: Path):
    """The demo model in float32, an image question's inputs, and generate()'s first 24 greedy ids (repetition
    penalty 1.005): what a fast path with Loupe's Triton kernels must give back (their CPU tests)."""
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(demo_model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(demo_model_dir)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "表格里写了什么？"}]}],
        add_generation_prompt=True, tokenize=False)
    inputs = dict(processor(images=[Image.new("RGB", (120, 90), "navy")], text=prompt, return_tensors="pt"))
    return model, inputs, model.generate(**inputs, max_new_tokens=24, do_sample=False, repetition_penalty=1.005)


@pytest.fixture(scope="session")
def xcomposer_tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny published-layout InternLM-XComposer2.5 folder (random weights), built once per test run."""
    from core.models.xcomposer_folder import build_xcomposer_folder

    return build_xcomposer_folder(tmp_path_factory.mktemp("models") / "xcomposer-tiny")


@pytest.fixture(autouse=True)
def loupe_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_model_dir: Path) -> Path:
    """Point LOUPE_HOME at a fresh folder (with the demo model linked in) and ignore any loupe.toml."""
    home = tmp_path / "loupe-home"
    (home / "models").mkdir(parents=True)
    (home / "models" / demo_model.DEMO_NAME).symlink_to(demo_model_dir, target_is_directory=True)
    for name in list(os.environ):
        if name.startswith("LOUPE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LOUPE_HOME", str(home))
    monkeypatch.setenv("LOUPE_CONFIG", "")  # empty: no settings file (one naming no file is refused)
    return home


@pytest.fixture(scope="session")
def engine(demo_model_dir: Path):
    """One loaded demo engine for the whole run (loading is what a real model does, just smaller)."""
    from core.serving.engine import load_engine
    from core.settings import load_settings

    settings = load_settings(home=demo_model_dir.parent.parent, model=str(demo_model_dir))
    return load_engine(settings)


@pytest.fixture()
def serving(engine, tmp_path):
    """An app over a fresh scheduler on the shared demo engine, with settings a test may change (the API tests)."""
    import dataclasses

    from core.serving.api import create_app
    from core.serving.engine import Engine
    from core.serving.scheduler import Scheduler

    made = []

    def make(max_waiting: int = 256, **settings_changes):
        settings_changes.setdefault("history_db", str(tmp_path / "history.sqlite3"))
        scheduler = Scheduler(engine.backend, max_waiting=max_waiting)
        made.append(scheduler)
        served = Engine(backend=engine.backend, settings=dataclasses.replace(engine.settings, **settings_changes))
        return create_app(served, scheduler, max_body_bytes=2 * 2**20), scheduler

    yield make
    for scheduler in made:
        scheduler.close()
