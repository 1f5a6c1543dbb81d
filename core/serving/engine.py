"""The engine: a loaded backend plus the settings that shape every question put to it."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.backends import Backend, ProgressCallback, create_backend
from core.backends.streaming import AnswerStream
from core.inputs import images as image_prep
from core.inputs import questions
from core.records import GenerationSettings, ModelCard, PreparedImage, Query, Turn
from core.settings import Settings, load_settings

if TYPE_CHECKING:
    from core.serving.scheduler import Ticket


@dataclass
class Engine:
    """Prepares images, validates questions and streams answers from one loaded backend."""

    backend: Backend
    settings: Settings

    def describe(self) -> ModelCard:
        return self.backend.describe()

    def prepare_image(self, data: bytes) -> PreparedImage:
        return image_prep.prepare(data, max_width=self.settings.max_width, max_pixels=self.settings.max_pixels)

    def default_generation(self, **changes: object) -> GenerationSettings:
        return questions.default_generation(self.settings, **changes)

    @property
    def max_images(self) -> int:
        """Images one question may carry: the settings' limit, or the model's when that is lower."""
        return min(self.settings.max_images, self.backend.max_images)

    def build_query(
        self, images: Sequence[bytes | PreparedImage], question: str, generation: GenerationSettings | None = None,
        history: Sequence[Turn] = (),
    ) -> Query:
        """The question checked once (core/inputs/questions.py), before any image is decoded or any token is
        spent; images given as bytes are prepared here, a PreparedImage is used as it is. `history`: the
        conversation's earlier turns, oldest first (a backend that cannot take them refuses in encode())."""
        return questions.build_query(
            images, question, generation or self.default_generation(), prepare=self.prepare_image,
            max_chars=self.settings.max_question_chars, max_images=self.max_images, history=history,
        )

    def ask(
        self, images: Sequence[bytes | PreparedImage], question: str, generation: GenerationSettings | None = None
    ) -> AnswerStream:
        return self.stream(self.build_query(images, question, generation))

    def stream(self, query: Query) -> AnswerStream:
        """Answer a Query that was already built (and so checked), straight from the backend, bypassing the queue."""
        return self.backend.stream(self.backend.encode(query))

    def submit(
        self, images: Sequence[bytes | PreparedImage], question: str, generation: GenerationSettings | None = None,
        *, session: str = "default", history: Sequence[Turn] = (),
    ) -> Ticket:
        """Like ask(), but through the model's shared queue (fair across sessions, position, cancel): the
        path every page, the batch runner and the API take. The Ticket iterates like an AnswerStream."""
        from core.serving.scheduler import scheduler_for

        return scheduler_for(self).submit(self.build_query(images, question, generation, history), session=session)


def load_engine(settings: Settings | None = None, progress: ProgressCallback | None = None) -> Engine:
    settings = settings or load_settings()
    backend = create_backend(settings)
    backend.load(progress)
    return Engine(backend=backend, settings=settings)
