"""The one protocol every backend follows; the UI, CLI and API never know which one they hold.

Backends declare what they can do as class attributes (as simonw/llm's models do), so callers ask
`backend.can_batch` instead of checking types.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from core.backends.streaming import AnswerStream
from core.errors import QuestionError
from core.models.load_progress import ProgressCallback
from core.records import ModelCard, Query


@dataclass(frozen=True, eq=False)  # eq=False: compared by identity, never tensor by tensor
class EncodedQuery:
    """A query encoded once by its backend (`Backend.encode`): what admission counts and what generation uses.

    `inputs` is what the backend's generation takes: the processor's tensors, still on the CPU so a queue of
    waiting questions holds no GPU memory (transformers); the request body (remote); None (XComposer, whose
    chat() encodes itself). `prompt_tokens` counts every token of the prompt, image tokens and chat template
    included, and `image_tokens` the image placeholders among them; both are None where the backend cannot
    know them before it runs (XComposer, a remote server). `encode_s` is part of the answer's preprocess time.
    """

    query: Query
    inputs: Any
    prompt_tokens: int | None
    image_tokens: int | None
    encode_s: float


@runtime_checkable
class Backend(Protocol):
    """Load a model once, encode each query once, stream its answer, describe itself."""

    name: str
    can_stream: bool  # pieces arrive while generating (False: one piece at the end)
    can_batch: bool  # several prompts over one image in one generate call
    has_local_gpus: bool  # memory charts make sense for it
    max_images: int
    takes_history: bool  # answers with earlier turns of the conversation (Query.history); False: refuses them
    takes_video: bool  # takes a video tiled into one image (core/inputs/video.py); False: refuses it
    max_in_flight: int  # requests the scheduler may run at once (1 for a local model; a remote engine batches)

    def load(self, progress: ProgressCallback | None = None) -> None: ...

    def encode(self, query: Query) -> EncodedQuery: ...

    def stream(self, encoded: EncodedQuery) -> AnswerStream: ...

    def describe(self) -> ModelCard: ...

    def unload(self) -> None: ...


def refuse_what_it_cannot_take(backend: Backend, query: Query) -> None:
    """Refuse, in one line the analyst can act on, a query with earlier turns or a video that this backend
    cannot take (its `takes_history` / `takes_video`); every backend's encode() calls it first."""
    if query.history and not backend.takes_history:
        raise QuestionError(f"The {backend.name} backend cannot take earlier turns of a conversation; "
                            "ask without a history, or load a model that takes one.")
    if any(image.is_video for image in query.images) and not backend.takes_video:
        raise QuestionError(f"The {backend.name} backend's model cannot take a video; "
                            "upload a still image, or load a model that takes video (InternLM-XComposer2.5).")
