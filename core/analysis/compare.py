"""Compare prompts side by side: images × columns (templates or free prompts), saved to history as one group.

Decisions:
- Each image's columns are answered in ONE batched generate() call when the backend can (`can_batch` and
  `answer_batch`): one vision encoding, left padding, greedy answers identical to asking each alone. That
  call takes the model's generation lock directly instead of queueing each column through the scheduler:
  a comparison is one request, and splitting it would cost 2-6 times the time. Backends that cannot batch
  answer the columns one after another through the fair queue. A batched call that runs out of memory is
  retried one column at a time (noted on the run).
- A comparison has 1-6 images and 1-6 columns, at least 2 cells: one image × 2-6 prompts, or one template
  across several images (the grid).
- Every cell is one history row (page "compare"), answered or failed, linked to its group in
  `compare_cells`. The group keeps each column's exact question text, so a re-run (another model, other
  images) asks the same thing even if a template was edited since; the run notes that it was.
- A bad image or a bad question fails its own cells only; the others are still answered.
- A column is (model, question): the model loaded here (LOCAL) or a remote OpenAI-compatible server (REMOTE,
  the `openai_base_url` setting), so one comparison can put the local model beside a remote one. The local
  columns keep the batched fast path; the remote ones go one at a time through the remote engine's own
  queue (the server batches what it receives). Each cell's stamp names the model that answered it.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.analysis.compare_calls import PAGE, Outcome, answer_call, cell_entry, sha256
from core.errors import HistoryError, LoupeError, QuestionError
from core.history import HistoryEntry, HistoryStore, compare_groups, make_stamp
from core.history.compare_groups import CompareGroupSummary
from core.inputs.templates import Template, by_id
from core.messages import MessageText
from core.records import Answer, GenerationSettings, PreparedImage, Query
from core.serving.engine import Engine
from core.serving.recorded_ask import ImageUpload

MAX_COLUMNS = 6
MAX_IMAGES = 6
LOCAL, REMOTE = "local", "remote"  # which model a column asks: the one loaded here, or the remote server's
NO_REMOTE = ("No remote model is configured: set openai_base_url (in loupe.toml, or LOUPE_OPENAI_BASE_URL) to an "
             "OpenAI-compatible server, e.g. http://127.0.0.1:23333/v1, and reload the page.")
COLUMNS_RANGE = MessageText("compare.columns_range", "Choose between 1 and {limit} templates or prompts (got {count}).")
IMAGES_RANGE = MessageText("compare.images_range", "Choose between 1 and {limit} images (got {count}).")
TOO_FEW_ANSWERS = MessageText("compare.too_few_answers",
                              "A comparison needs at least two answers: 2 or more prompts, or 2 or more images.")
IMAGE_NOT_KEPT = MessageText("compare.image_not_kept", "The image “{name}” of comparison #{group_id} was not kept; "
                                                       "choose images to re-run it on.")
__all__ = ["LOCAL", "MAX_COLUMNS", "MAX_IMAGES", "NO_REMOTE", "PAGE", "REMOTE", "CompareCell", "CompareColumn",
           "CompareRun", "check_shape", "compare", "list_groups", "load_group", "rerun_group", "template_column"]


@dataclass(frozen=True)
class CompareColumn:
    """One column: its label, the exact question it asks, the template it came from (None: free prompt), and
    the model that answers it (LOCAL or REMOTE)."""

    label: str
    question: str
    template: Template | None = None
    model: str = LOCAL


@dataclass(frozen=True)
class CompareCell:
    """One answer of the grid (image row × column): its history row, and, for a fresh run, the Answer and tokens."""

    image_index: int
    column_index: int
    entry: HistoryEntry  # answer text, tokens, timings, truncation, verdict, error
    batched: bool  # answered inside one batched generate() call with the rest of its row
    answer: Answer | None = None  # None when re-opened from history or failed
    token_ids: tuple[int, ...] = ()  # the new tokens, when the batched call produced them


@dataclass(frozen=True)
class CompareRun:
    """A comparison: its history group, images × columns of cells, and what to know about how it ran."""

    group_id: int
    image_names: tuple[str, ...]
    image_hashes: tuple[str, ...]
    columns: tuple[CompareColumn, ...]
    cells: tuple[CompareCell, ...]
    notes: tuple[str, ...] = ()
    wall_s: float = 0.0
    rerun_of: int | None = None
    model_names: tuple[str, ...] = ()  # per column: the model that answered it (its card's name)
    column_backends: tuple[str, ...] = ()  # per column: that model's backend (transformers, xcomposer, openai)

    def cell(self, image_index: int, column_index: int) -> CompareCell:
        return next(c for c in self.cells if (c.image_index, c.column_index) == (image_index, column_index))


def template_column(template: Template, values: dict[str, str] | None = None, *, max_chars: int | None = None,
                    ) -> CompareColumn:
    return CompareColumn(template.title, template.fill(values, max_chars=max_chars), template)


def check_shape(images: int, columns: int) -> None:
    if not 1 <= columns <= MAX_COLUMNS:
        raise QuestionError(COLUMNS_RANGE(limit=MAX_COLUMNS, count=columns))
    if not 1 <= images <= MAX_IMAGES:
        raise QuestionError(IMAGES_RANGE(limit=MAX_IMAGES, count=images))
    if images * columns < 2:
        raise QuestionError(TOO_FEW_ANSWERS())


def _engines(engine: Engine, remote: Engine | None, columns: Sequence[CompareColumn]) -> dict[str, Engine]:
    if any(c.model == REMOTE for c in columns) and remote is None:
        raise QuestionError(NO_REMOTE)
    unknown = sorted({c.model for c in columns} - {LOCAL, REMOTE})
    if unknown:
        raise QuestionError(f"Unknown model for a column: {', '.join(unknown)} (use {LOCAL} or {REMOTE}).")
    return {LOCAL: engine, **({REMOTE: remote} if remote is not None else {})}


def _calls(images: int, columns: Sequence[CompareColumn]) -> list[tuple[str, list[tuple[int, int]]]]:
    """(model, cells) per call: a model's columns for one image together, or a model's only column across all
    images together (one template across several images)."""
    calls = []
    for model in (LOCAL, REMOTE):
        mine = [j for j, c in enumerate(columns) if c.model == model]
        if len(mine) == 1:
            calls.append((model, [(i, mine[0]) for i in range(images)]))
        elif mine:
            calls += [(model, [(i, j) for j in mine]) for i in range(images)]
    return calls


def compare(engine: Engine, store: HistoryStore, images: Sequence[ImageUpload], columns: Sequence[CompareColumn], *,
            generation: GenerationSettings | None = None, session_id: str = "default", batched: bool = True,
            rerun_of: int | None = None, notes: Sequence[str] = (), remote: Engine | None = None,
            on_cell: Callable[[CompareCell], None] | None = None) -> CompareRun:
    """Answer every image × column, record each cell and the group, and return the grid.

    Calls: per model, one per image (its columns together, one vision encoding) or, with a single column, one
    for all images. `batched=False` forces one-at-a-time answers (to compare against); `remote` answers the
    REMOTE columns; `on_cell` hears of each cell.
    """
    check_shape(len(images), len(columns))
    engines = _engines(engine, remote, columns)
    started = time.perf_counter()
    generation = generation or engine.default_generation()
    cards = {model: e.describe() for model, e in engines.items()}
    stamps = {model: make_stamp(card, generation, max_width=engine.settings.max_width).to_json()
              for model, card in cards.items()}
    run_notes = list(notes)
    model_names = tuple(cards[c.model].name for c in columns)
    group_id = _create_group(store, session_id, images, columns, generation, cards[LOCAL].name, model_names,
                             rerun_of)
    prepared: list[PreparedImage | None] = []
    outcomes: dict[tuple[int, int], Outcome] = {}
    queries: dict[tuple[int, int], Query] = {}
    for i, upload in enumerate(images):
        try:
            image = engine.prepare_image(upload.data)
        except LoupeError as exc:
            prepared.append(None)
            outcomes.update({(i, j): (None, (), exc, False) for j in range(len(columns))})
            continue
        prepared.append(image)
        for j, column in enumerate(columns):
            try:
                queries[(i, j)] = engines[column.model].build_query([image], column.question, generation)
            except LoupeError as exc:
                outcomes[(i, j)] = (None, (), exc, False)
    cells: list[CompareCell] = []
    for model, keys in _calls(len(images), columns):
        asked = [key for key in keys if key in queries]
        outcomes.update(zip(asked, answer_call(engines[model], [queries[k] for k in asked], session_id, batched,
                                               run_notes), strict=True))
        for i, j in keys:
            answer, ids, error, in_batch = outcomes[(i, j)]
            kept = prepared[i]
            entry = cell_entry(session_id, columns[j].question, columns[j].template, images[i], kept, answer, error,
                               stamps[model])
            entry = compare_groups.record_cell(store, group_id, i, j, entry, ((images[i].data, kept),) if kept else (),
                                               batched=in_batch)
            cells.append(CompareCell(i, j, entry, in_batch, answer, ids))
            if on_cell is not None:
                on_cell(cells[-1])
    hashes = tuple(p.sha256 if p else sha256(u.data) for p, u in zip(prepared, images, strict=True))
    cells.sort(key=lambda c: (c.image_index, c.column_index))
    return CompareRun(group_id, tuple(u.name for u in images), hashes, tuple(columns), tuple(cells),
                      tuple(dict.fromkeys(run_notes)), time.perf_counter() - started, rerun_of, model_names,
                      tuple(cards[c.model].backend for c in columns))


# -- the group in history --------------------------------------------------------------------------
def _create_group(store: HistoryStore, session_id: str, images: Sequence[ImageUpload],
                  columns: Sequence[CompareColumn], generation: GenerationSettings, model: str,
                  model_names: Sequence[str], rerun_of: int | None) -> int:
    spec = {
        "columns": [{"label": c.label, "question": c.question, "template_id": c.template.id if c.template else "",
                     "template_hash": c.template.text_hash if c.template else "", "model": c.model,
                     "model_name": name} for c, name in zip(columns, model_names, strict=True)],
        "images": [{"name": u.name, "sha256": sha256(u.data)} for u in images],
        "generation": generation.to_dict(), "model": model,
    }
    return compare_groups.create_group(store, session_id, spec, rerun_of)


def _columns(spec: dict[str, Any]) -> tuple[tuple[CompareColumn, ...], list[str]]:
    columns, notes = [], []
    for raw in spec["columns"]:
        template = by_id(raw["template_id"]) if raw["template_id"] else None
        if raw["template_id"] and (template is None or template.text_hash != raw["template_hash"]):
            notes.append(f"Template “{raw['label']}” changed or was removed since; its original question is asked.")
        columns.append(CompareColumn(raw["label"], raw["question"], template, raw.get("model", LOCAL)))
    return tuple(columns), notes


def load_group(store: HistoryStore, group_id: int) -> CompareRun:
    """A saved comparison as it was answered (re-opened from history: no Answer records, no token ids)."""
    saved = compare_groups.group(store, group_id)
    spec, rerun_of = saved.spec, saved.rerun_of
    cells = tuple(CompareCell(c.image_index, c.column_index, c.entry, c.batched)
                  for c in compare_groups.cells(store, group_id))
    columns, notes = _columns(spec)
    names = tuple(raw.get("model_name", spec.get("model", "")) for raw in spec["columns"])
    backends = tuple(c.entry.stamp.get("backend", "") if c.entry.stamp else "" for c in
                     sorted(cells, key=lambda c: c.column_index) if c.image_index == 0)
    return CompareRun(group_id, tuple(i["name"] for i in spec["images"]), tuple(i["sha256"] for i in spec["images"]),
                      columns, cells, tuple(notes), 0.0, rerun_of, names, backends)


def list_groups(store: HistoryStore, *, limit: int = 50) -> tuple[CompareGroupSummary, ...]:
    """The newest comparisons: id, when, model, image names and column labels, what it re-ran."""
    return compare_groups.list_groups(store, limit=limit)


def rerun_group(engine: Engine, store: HistoryStore, group_id: int, *, images: Sequence[ImageUpload] | None = None,
                session_id: str = "default", batched: bool = True, remote: Engine | None = None) -> CompareRun:
    """Ask a saved comparison again, on this engine's model (and `remote` for its remote columns), with its own
    images or `images` instead."""
    spec = compare_groups.group(store, group_id).spec
    columns, notes = _columns(spec)
    if images is None:
        found = []
        for image in spec["images"]:
            stored = store.image(image["sha256"])
            if stored is None:
                raise HistoryError(IMAGE_NOT_KEPT(name=image["name"], group_id=group_id))
            found.append(ImageUpload(stored.data, image["name"]))
        images = found
    generation = GenerationSettings(**spec["generation"])
    return compare(engine, store, images, columns, generation=generation, session_id=session_id, batched=batched,
                   rerun_of=group_id, notes=notes, remote=remote)
