"""The engine: a loaded backend plus the settings that shape every question put to it."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.backends import Backend, ProgressCallback, create_backend
from core.backends.streaming import AnswerStream
from core.inputs import images as image_prep
from core.inputs import questions
from core.records import GenerationSettings, ModelCard, PreparedImage, Query
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
        values = {"max_new_tokens": self.settings.max_new_tokens, **changes}
        return GenerationSettings(**values)  # type: ignore[arg-type]

    def build_query(
        self, images: Sequence[bytes | PreparedImage], question: str, generation: GenerationSettings | None = None
    ) -> Query:
        """Validate everything before any image is decoded or any token is spent."""
        max_images = min(self.settings.max_images, self.backend.max_images)
        questions.validate(question, max_chars=self.settings.max_question_chars)
        questions.check_image_count(len(images), max_images=max_images)  # before any decoding
        prepared = [img if isinstance(img, PreparedImage) else self.prepare_image(img) for img in images]
        return questions.build_query(
            prepared, question, generation or self.default_generation(),
            max_chars=self.settings.max_question_chars, max_images=max_images,
        )

    def ask(
        self, images: Sequence[bytes | PreparedImage], question: str, generation: GenerationSettings | None = None
    ) -> AnswerStream:
        return self.backend.stream(self.backend.encode(self.build_query(images, question, generation)))

    def submit(
        self, images: Sequence[bytes | PreparedImage], question: str, generation: GenerationSettings | None = None,
        *, session: str = "default",
    ) -> Ticket:
        """Like ask(), but through the model's shared queue (fair across sessions, position, cancel): the
        path every page, the batch runner and the API take. The Ticket iterates like an AnswerStream."""
        from core.serving.scheduler import scheduler_for

        return scheduler_for(self).submit(self.build_query(images, question, generation), session=session)


def load_engine(settings: Settings | None = None, progress: ProgressCallback | None = None) -> Engine:
    settings = settings or load_settings()
    backend = create_backend(settings)
    backend.load(progress)
    return Engine(backend=backend, settings=settings)
