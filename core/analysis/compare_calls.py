"""How Compare asks one call's worth of prompts: batched on a backend that can (one vision encoding), else one
at a time through that model's fair queue; and the history row each answer (or failure) becomes."""
from __future__ import annotations

import hashlib
from typing import Any

from core.backends.streaming import describe_failure
from core.errors import LoupeError, OutOfMemoryError
from core.history import HistoryEntry
from core.inputs.moderation import parse_verdict
from core.records import Answer, PreparedImage, Query
from core.serving.engine import Engine
from core.serving.recorded_ask import ImageUpload

PAGE = "compare"
Outcome = tuple[Answer | None, tuple[int, ...], LoupeError | None, bool]  # answer, token ids, error, batched


def answer_call(engine: Engine, queries: list[Query], session_id: str, batched: bool,
                notes: list[str]) -> list[Outcome]:
    """One outcome per query, in order. A batched call that runs out of memory is retried one at a time."""
    backend = engine.backend
    if batched and len(queries) > 1 and backend.can_batch and hasattr(backend, "answer_batch"):
        try:
            return [(a, ids, None, True) for a, ids in backend.answer_batch(queries)]
        except Exception as exc:  # noqa: BLE001 - the analyst gets a typed message, never a stack trace
            error = describe_failure(exc)
            if not isinstance(error, OutOfMemoryError):
                return [(None, (), error, True) for _ in queries]
            notes.append(f"The batched call ran out of memory; {len(queries)} prompts were answered one at a time.")
    results: list[Outcome] = []
    for query in queries:
        try:
            answer = engine.submit(list(query.images), query.question, query.settings, session=session_id).collect()
            results.append((answer, (), None, False))
        except LoupeError as exc:
            results.append((None, (), exc, False))
    return results


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cell_entry(session_id: str, question: str, template: Any, upload: ImageUpload, prepared: PreparedImage | None,
               answer: Answer | None, error: LoupeError | None, stamp: dict[str, Any]) -> HistoryEntry:
    """A cell's history row (page "compare"); a moderation template's answer gets its verdict for Review."""
    verdict = parse_verdict(answer.text, template.output.checklist) if (
        answer is not None and template is not None and template.output is not None) else None
    return HistoryEntry.from_answer(
        answer, session_id=session_id, page=PAGE, question=question, error=error or "",
        template_id=template.id if template else "", template_hash=template.text_hash if template else "",
        image_hashes=(prepared.sha256 if prepared else sha256(upload.data),),
        image_notes=prepared.notes if prepared else (), verdict=verdict, stamp=stamp,
        image_note_messages=prepared.note_messages if prepared else (),
    )
