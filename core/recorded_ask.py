"""Ask a question from a page and keep it in history, whatever happens: what every scenario page calls.

`ask_and_record()` returns a RecordedAsk; iterating it prepares the images, validates the question,
streams the answer's pieces, and then writes exactly one history row: "answered" (with the answer,
timings, memory and, for a moderation template, the parsed verdict), "failed" (with the error, which is
re-raised for the page to show), or "stopped" (the reader went away before the end: the partial text is
kept and generation is cancelled). Re-runs go through the same path with the original's question,
image bytes and generation settings.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core.engine import Engine
from core.errors import HistoryError, LoupeError
from core.history import HistoryEntry, HistoryStore, differences, make_stamp
from core.history.store import now_utc
from core.moderation import Verdict, parse_verdict
from core.records import Answer, GenerationSettings, PreparedImage
from core.templates import Template, by_id


@dataclass(frozen=True)
class ImageUpload:
    """An image as the analyst gave it: the bytes and the name it came with (a file name or a sample id)."""

    data: bytes
    name: str


@dataclass(frozen=True)
class AskRequest:
    """One question from a page: who asked, where, with which template, images and generation settings."""

    session_id: str
    page: str
    question: str
    images: tuple[ImageUpload, ...]
    template: Template | None = None
    generation: GenerationSettings | None = None  # None: the engine's defaults (settings.max_new_tokens, greedy)
    rerun_of: int | None = None


class RecordedAsk:
    """Iterate for the answer's text pieces. Afterwards: `entry` (the history row written), `answer`,
    `verdict` (moderation templates), `error` (the LoupeError shown to the analyst, also re-raised)."""

    def __init__(self, engine: Engine, store: HistoryStore, request: AskRequest) -> None:
        self.engine = engine
        self.store = store
        self.request = request
        self.entry: HistoryEntry | None = None
        self.answer: Answer | None = None
        self.verdict: Verdict | None = None
        self.error: LoupeError | None = None
        self.stream: Any = None  # the AnswerStream, or the scheduler's Ticket (has .ahead())

    def __iter__(self) -> Iterator[str]:
        request, engine = self.request, self.engine
        started = time.perf_counter()
        created_at = now_utc()
        prepared: list[PreparedImage] = []
        pieces: list[str] = []
        stamp: dict[str, Any] = {}
        try:
            generation = request.generation or engine.default_generation()
            stamp = make_stamp(engine.describe(), generation, max_width=engine.settings.max_width).to_json()
            prepared = [engine.prepare_image(image.data) for image in request.images]
            self.stream = _open_stream(engine, prepared, request.question, generation, request.session_id)
            for piece in self.stream:
                pieces.append(piece)
                yield piece
            self.answer = self.stream.answer
        except GeneratorExit:
            if self.stream is not None:
                self.stream.cancel()
            self._record(created_at, prepared, status="stopped", answer="".join(pieces), started=started,
                         error="Stopped before the answer was complete (the page was left or rerun).", stamp=stamp)
            raise
        except Exception as exc:
            self.error = exc if isinstance(exc, LoupeError) else None
            self._record(created_at, prepared, status="failed", answer="".join(pieces), started=started,
                         error=str(exc) or type(exc).__name__, error_type=type(exc).__name__, stamp=stamp)
            raise
        assert self.answer is not None
        template = request.template
        if template is not None and template.output is not None:
            self.verdict = parse_verdict(self.answer.text, template.output.checklist)
        self._record(created_at, prepared, status="answered", answer=self.answer.text, started=started, stamp=stamp)

    def run(self) -> RecordedAsk:
        """Drain it without streaming (tests, batch work); a LoupeError is re-raised after recording."""
        for _ in self:
            pass
        return self

    def _record(self, created_at: str, prepared: list[PreparedImage], *, status: str, answer: str, started: float,
                error: str = "", error_type: str = "", stamp: dict[str, Any] | None = None) -> None:
        request, result = self.request, self.answer
        uploads = [image.data for image in request.images]
        hashes = tuple(p.sha256 for p in prepared) + tuple(
            hashlib.sha256(data).hexdigest() for data in uploads[len(prepared):])
        timings: dict[str, float] = {"total": time.perf_counter() - started}
        if result is not None:
            t = result.timings
            timings = {"preprocess": t.preprocess, "vision": t.vision, "prefill": t.prefill, "decode": t.decode,
                       "total": t.total}
        template = request.template
        entry = HistoryEntry(
            session_id=request.session_id, page=request.page, question=request.question, status=status,
            created_at=created_at, template_id=template.id if template else "",
            template_hash=template.text_hash if template else "", image_hashes=hashes,
            image_notes=tuple(note for p in prepared for note in p.notes), answer=answer,
            truncated=bool(result and result.truncated) or status == "stopped",
            input_tokens=result.input_tokens if result else 0, output_tokens=result.output_tokens if result else 0,
            tokens_per_s=result.tokens_per_s if result else 0.0, timings=timings,
            peak_memory_gb=dict(result.peak_memory_gb) if result else {}, error=error, error_type=error_type,
            verdict=self.verdict.status if self.verdict else "",
            verdict_detail=self.verdict.to_json() if self.verdict else {}, stamp=stamp or {},
            rerun_of=request.rerun_of,
        )
        self.entry = self.store.record(entry, tuple(zip(uploads, prepared)))


def _open_stream(engine: Engine, prepared: list[PreparedImage], question: str, generation: GenerationSettings,
                 session_id: str) -> Any:
    # Through the model's shared queue when the engine has one (fair across sessions), else directly.
    submit = getattr(engine, "submit", None)
    if submit is not None:
        return submit(prepared, question, generation, session=session_id)
    return engine.ask(prepared, question, generation)


def ask_and_record(engine: Engine, store: HistoryStore, request: AskRequest) -> RecordedAsk:
    return RecordedAsk(engine, store, request)


def rerun_request(store: HistoryStore, entry_id: int, session_id: str) -> AskRequest:
    """The original's question, image bytes, template and generation settings, to be asked again now."""
    original = store.get(entry_id)
    if original is None:
        raise HistoryError(f"History entry #{entry_id} does not exist.")
    images = []
    for sha in original.image_hashes:
        stored = store.image(sha)
        if stored is None:
            raise HistoryError(
                f"The image of #{entry_id} was not kept (it could not be read when it was asked), so it cannot be re-run.")
        images.append(ImageUpload(stored.data, sha[:12]))
    generation = GenerationSettings(**original.stamp["generation"]) if original.stamp.get("generation") else None
    template = by_id(original.template_id) if original.template_id else None
    return AskRequest(session_id=session_id, page=original.page, question=original.question, images=tuple(images),
                      template=template, generation=generation, rerun_of=original.id)


def rerun_differences(original: HistoryEntry, rerun: HistoryEntry) -> list[str]:
    """What differs between an entry and its re-run: conditions first, then the outcome."""
    found = differences(original.stamp, rerun.stamp)
    if original.template_hash != rerun.template_hash:
        found.append("template text changed since the original" if rerun.template_hash else "template no longer exists")
    if original.status != rerun.status:
        found.append(f"status: {original.status} → {rerun.status}")
    found.append("answer: identical" if original.answer == rerun.answer else "answer: differs")
    return found
