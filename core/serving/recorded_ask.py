"""Ask a question from a page and keep it in history, whatever happens: what every scenario page calls.

`ask_and_record()` returns a RecordedAsk; iterating it prepares the images, validates the question,
queues it on the model's shared queue (Engine.submit: fair across sessions), streams the answer's
pieces, and then writes exactly one history row: "answered" (with the answer,
timings, memory and, for a moderation template, the parsed verdict), "failed" (with the error, which is
re-raised for the page to show), or "stopped" (the reader went away before the end: the partial text is
kept and generation is cancelled; `stop()` does the same from another thread, for a page whose next run
starts while the interrupted one is still streaming). Re-runs go through the same path with the original's question,
image bytes and generation settings.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from core.errors import GenerationError, HistoryError, LoupeError
from core.history import HistoryEntry, HistoryStore, differences, make_stamp, now_utc
from core.inputs.moderation import Verdict, parse_verdict
from core.inputs.templates import Template, by_id
from core.messages import Message
from core.records import Answer, GenerationSettings, PreparedImage, Turn
from core.serving.engine import Engine
from core.serving.queue_messages import CANCELLED_BEFORE_START, IMAGE_NOT_KEPT, NO_SUCH_ENTRY, STOPPED
from core.serving.ticket import Ticket
from core.statuses import EntryStatus

STOP_WAIT_S = 10.0  # how long a stop waits for generation to end at its next token (one token, even on a CPU)


@dataclass(frozen=True)
class ImageUpload:
    """An image as the analyst gave it: the bytes and the name it came with (a file name or a sample id).

    `prepared`: the image already prepared from these bytes (the page's preview), handed to the model as it
    is so the analyst sees exactly what the model gets and it is not decoded twice; the bytes stay for
    history's image store. None: prepared when the question is asked."""

    data: bytes
    name: str
    prepared: PreparedImage | None = None

    def __post_init__(self) -> None:
        if self.prepared is not None and self.prepared.sha256 != hashlib.sha256(self.data).hexdigest():
            raise ValueError(f"the prepared image handed with {self.name!r} was not prepared from its bytes")


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
    history: tuple[Turn, ...] = ()  # the conversation's earlier turns, oldest first, sent with the question
    conversation_id: str = ""  # the page conversation the row belongs to ('' = a question on its own)


# Writes one entry with its images (given the exception when it failed); returns it as recorded.
EntryWriter = Callable[[HistoryEntry, tuple[tuple[bytes, PreparedImage], ...], BaseException | None], HistoryEntry]


class RecordedAsk:
    """Iterate for the answer's text pieces. Afterwards: `entry` (the history row written), `answer`,
    `verdict` (moderation templates), `error` (the LoupeError shown to the analyst, also re-raised).
    `start()` (called by iteration if not before) queues the question; then `ticket` can tell its position."""

    def __init__(self, engine: Engine, store: HistoryStore, request: AskRequest,
                 writer: EntryWriter | None = None) -> None:
        self.engine = engine
        self.store = store
        self.request = request
        self.writer = writer
        self.entry: HistoryEntry | None = None
        self.answer: Answer | None = None
        self.verdict: Verdict | None = None
        self.error: LoupeError | None = None
        self.ticket: Ticket | None = None
        self._prepared: list[PreparedImage] = []
        self._stamp: dict[str, Any] = {}
        self._started_at = 0.0
        self._created_at = ""
        self._arrived: list[str] = []  # the text pieces handed to the reader so far
        # One row per question: a stop from another thread and the reader's own ending both record through it.
        self._record_lock = threading.RLock()

    def start(self) -> None:
        """Prepare the images (those the page has not prepared already), check the question and put it in
        the model's queue; a refusal is recorded and raised. Does nothing the second time."""
        if self._created_at:
            return
        request, engine = self.request, self.engine
        self._started_at, self._created_at = time.perf_counter(), now_utc()
        try:
            generation = request.generation or engine.default_generation()
            self._stamp = make_stamp(engine.describe(), generation, max_width=engine.settings.max_width).to_json()
            self._prepared = [image.prepared or engine.prepare_image(image.data) for image in request.images]
            self.ticket = engine.submit(self._prepared, request.question, generation, session=request.session_id,
                                        history=request.history)
        except Exception as exc:
            self._fail(exc, "")
            raise

    def __iter__(self) -> Iterator[str]:
        self.start()
        assert self.ticket is not None
        pieces = self._arrived
        try:
            for piece in self.ticket:
                pieces.append(piece)
                yield piece
            self.answer = self.ticket.answer
        except GeneratorExit:
            self.stop()
            raise
        except Exception as exc:
            self._fail(exc, "".join(pieces))
            raise
        self._record_answer()

    def growing_text(self, every_s: float) -> Iterator[str]:
        """The answer's text so far, at most once every `every_s` seconds and once more at the end, recorded
        as iteration is: for a page, whose reader then wakes a few times a second instead of once per token
        (each wake-up takes the GIL from generation, and on a busy CPU its time slice)."""
        self.start()
        ticket = self.ticket
        assert ticket is not None
        arrived = self._arrived
        try:
            ended = False
            while not ended:
                ended = ticket.wait(every_s)
                pieces, _ = ticket.drain()
                if pieces:
                    arrived.extend(pieces)
                    yield "".join(arrived)
            if ticket.error is not None:
                raise ticket.error
            if ticket.answer is None:
                raise GenerationError(CANCELLED_BEFORE_START())
            self.answer = ticket.answer
        except GeneratorExit:
            self.stop()
            raise
        except Exception as exc:
            self._fail(exc, "".join(arrived))
            raise
        self._record_answer()

    def stop(self) -> HistoryEntry | None:
        """Stop the question, queued or answering, from any thread: its row is written as "stopped" with the
        text handed out so far, unless a row was written already (answered, failed, or stopped before). Returns
        the question's row; None when it was never queued."""
        with self._record_lock:
            if self.entry is None and self.ticket is not None:
                self._record_stop("".join(self._arrived))
        return self.entry

    def _record_answer(self) -> None:
        assert self.answer is not None
        if self.entry is not None:  # stopped from another thread: that row stands
            return
        template = self.request.template
        if template is not None and template.output is not None:
            self.verdict = parse_verdict(self.answer.text, template.output.checklist)
        self._record(EntryStatus.ANSWERED, self.answer.text)

    def _record_stop(self, arrived: str) -> None:
        """Cancel generation, which ends at its next token, and wait that long for the Answer it then builds:
        the stopped row keeps the tokens generated (the token or two in flight when Stop came included) and
        their timings, with the text that arrived, as the analyst saw it. A question still queued, or a model
        that does not end in time, has no Answer: its row has the text alone."""
        assert self.ticket is not None
        self.ticket.cancel()
        self.ticket.wait(STOP_WAIT_S)
        self.answer = self.ticket.answer
        self._record(EntryStatus.STOPPED, arrived,
                     error=STOPPED())

    def _fail(self, exc: Exception, partial: str) -> None:
        self.error = exc if isinstance(exc, LoupeError) else None
        self._record(EntryStatus.FAILED, partial, error=exc)

    def run(self) -> RecordedAsk:
        """Drain it without streaming (tests, batch work); a LoupeError is re-raised after recording."""
        for _ in self:
            pass
        return self

    def _record(self, status: EntryStatus, answer: str, *, error: BaseException | Message | str = "") -> None:
        with self._record_lock:
            if self.entry is None:
                self._write(status, answer, error)

    def _write(self, status: EntryStatus, answer: str, error: BaseException | Message | str) -> None:
        request, prepared = self.request, self._prepared
        uploads = [image.data for image in request.images]
        # Images that failed to prepare have no PreparedImage: their uploads' hashes still say what was asked.
        hashes = tuple(p.sha256 for p in prepared) + tuple(
            hashlib.sha256(data).hexdigest() for data in uploads[len(prepared):])
        template = request.template
        entry = HistoryEntry.from_answer(
            self.answer, session_id=request.session_id, page=request.page, question=request.question,
            status=status, text=answer, error=error, elapsed_s=time.perf_counter() - self._started_at,
            created_at=self._created_at, template_id=template.id if template else "",
            template_hash=template.text_hash if template else "", image_hashes=hashes,
            image_notes=tuple(note for p in prepared for note in p.notes), verdict=self.verdict, stamp=self._stamp,
            rerun_of=request.rerun_of, conversation_id=request.conversation_id,
            image_note_messages=tuple(note for p in prepared for note in p.note_messages),
        )
        images = tuple(zip(uploads, prepared, strict=False))  # only the images that were prepared are kept
        if self.writer is None:
            self.entry = self.store.record(entry, images)
        else:
            self.entry = self.writer(entry, images, error if isinstance(error, BaseException) else None)


def ask_and_record(engine: Engine, store: HistoryStore, request: AskRequest,
                   writer: EntryWriter | None = None) -> RecordedAsk:
    """`writer` (default: store.record) writes the entry, told of the failure if any; Batch writes its item's
    status in the same transaction."""
    return RecordedAsk(engine, store, request, writer)


def rerun_request(store: HistoryStore, entry_id: int, session_id: str) -> AskRequest:
    """The original's question, image bytes, template and generation settings, to be asked again now."""
    original = store.get(entry_id)
    if original is None:
        raise HistoryError(NO_SUCH_ENTRY(entry_id=entry_id))
    images = []
    for sha in original.image_hashes:
        stored = store.image(sha)
        if stored is None:
            raise HistoryError(IMAGE_NOT_KEPT(entry_id=entry_id))
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
