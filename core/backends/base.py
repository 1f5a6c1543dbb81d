"""The one protocol every backend follows; the UI, CLI and API never know which one they hold.

Backends declare what they can do as class attributes (as simonw/llm's models do), so callers ask
`backend.can_batch` instead of checking types.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from core.backends.streaming import AnswerStream
from core.records import ModelCard, Query


@dataclass(frozen=True)
class LoadProgress:
    """One step of loading a model: how far along (0..1) and a log line for the analyst."""

    fraction: float
    message: str


ProgressCallback = Callable[[LoadProgress], None]


@runtime_checkable
class Backend(Protocol):
    """Load a model once, stream answers to queries, describe itself."""

    name: str
    can_stream: bool  # pieces arrive while generating (False: one piece at the end)
    can_batch: bool  # several prompts over one image in one generate call
    has_local_gpus: bool  # memory charts make sense for it
    max_images: int

    def load(self, progress: ProgressCallback | None = None) -> None: ...

    def stream(self, query: Query) -> AnswerStream: ...

    def describe(self) -> ModelCard: ...

    def unload(self) -> None: ...
