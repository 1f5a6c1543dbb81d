"""Batch runners: the background threads that run batches in this process, at most one per batch.

The Batch page only asks: `start` a batch (nothing happens if its runner is alive), `pause` it (it stops
at the next item boundary), read its `runner` (its latest progress, the error that ended it) and
`resume_interrupted` — batches a dead process left "running" restart here, once each, with their first
unfinished item. Keyed by the database file and the batch id, so two stores never share a runner.
"""
from __future__ import annotations

import threading

from core.analysis import batch
from core.analysis.batch import BatchProgress
from core.history import HistoryStore, batches, now_utc
from core.serving.engine import Engine
from core.statuses import BatchStatus


class BatchRunner:
    """A batch running in a background thread of this process; `stop()` pauses it at the next item."""

    def __init__(self, engine: Engine, store: HistoryStore, batch_id: int) -> None:
        self.batch_id = batch_id
        self.latest: BatchProgress | None = None
        self.error: str = ""
        self.started_at = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(engine, store), name=f"loupe-batch-{batch_id}",
                                        daemon=True)

    def _run(self, engine: Engine, store: HistoryStore) -> None:
        try:
            self.latest = batch.run(engine, store, self.batch_id, on_progress=self._note, stop=self._stop)
        except Exception as exc:  # noqa: BLE001 - the page shows it; the batch stays resumable
            self.error = str(exc)

    def _note(self, update: BatchProgress) -> None:
        self.latest = update

    def begin(self) -> BatchRunner:
        self.started_at = now_utc()  # this run's start: its ETA counts only the items it finished
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


_runners: dict[tuple[str, int], BatchRunner] = {}
_lock = threading.Lock()


def _key(store: HistoryStore, batch_id: int) -> tuple[str, int]:
    return str(store.path.resolve()), batch_id


def _start_if_idle(engine: Engine, store: HistoryStore, batch_id: int) -> tuple[BatchRunner, bool]:
    """The batch's live runner, and whether this call started it (checked and started under one lock)."""
    with _lock:
        found = _runners.get(_key(store, batch_id))
        if found is not None and found.alive:
            return found, False
        batches.batch(store, batch_id)  # a missing batch is a HistoryError, before any thread starts
        found = _runners[_key(store, batch_id)] = BatchRunner(engine, store, batch_id).begin()
        return found, True


def start(engine: Engine, store: HistoryStore, batch_id: int) -> BatchRunner:
    """The batch's runner in this process, started if none is alive."""
    return _start_if_idle(engine, store, batch_id)[0]


def runner(store: HistoryStore, batch_id: int) -> BatchRunner | None:
    """The live runner of a batch in this process, if any."""
    found = _runners.get(_key(store, batch_id))
    return found if found is not None and found.alive else None


def pause(store: HistoryStore, batch_id: int) -> bool:
    """Ask the batch's runner to stop at the next item boundary; False when none runs here."""
    found = runner(store, batch_id)
    if found is not None:
        found.stop()
    return found is not None


def resume_interrupted(engine: Engine, store: HistoryStore) -> list[int]:
    """Start every batch left "running" with no runner here (the process was restarted); returns their ids."""
    return [batch_id for batch_id in batches.ids_with_status(store, BatchStatus.RUNNING)
            if _start_if_idle(engine, store, batch_id)[1]]
