"""The loaded model's lifecycle: one engine per process, loaded once, switched when its settings change.

A ModelSlot holds it. The slot is keyed on the settings that choose and place the model (LOAD_KEYS); when
they change (loupe.toml edited, LOUPE_* changed), the next `get()` resolves and pre-flights the new model
first, then stops the old one's queue and unloads it (backend.unload() gives its GPU memory back), and only
then loads the new one, so two models never sit in memory together; a new model that cannot even be found,
or would not fit, leaves the old one loaded. A caller that arrives while another is loading waits for that
load and attaches to it; it never starts a second one. Settings that do not need a reload (question limit,
image width, ...) apply at once. The dashboard keeps its slot in st.cache_resource and draws the progress.

After a load, every object then alive (the imported libraries, the model, Streamlit's own) is moved out of
the garbage collector's sight (gc.freeze): they live as long as the process. Python's full collections walk
every tracked object while holding the GIL, and in the dashboard's process they had grown to 100-390 ms
each (a gc callback's log, demo model, one benchmark run), long enough to stall an answer's tokens mid-stream;
after the freeze they walk only what came later (`python -m core serve` freezes after its one load too).
Before an unload the objects are given back to the collector
(gc.unfreeze), so the old model's reference cycles are collected with it.
"""
from __future__ import annotations

import gc
import threading

from core.backends import ProgressCallback, create_backend
from core.serving.engine import Engine
from core.serving.scheduler import close_scheduler_for
from core.settings import Settings

# The settings that decide which weights are loaded and where; any other setting applies without a reload.
LOAD_KEYS = ("model", "backend", "device", "trust_remote_code", "max_memory_gb", "split", "openai_base_url",
             "openai_api_key")

LoadKey = tuple[object, ...]


def load_key(settings: Settings) -> LoadKey:
    """What two settings must share for one loaded model to serve both."""
    return tuple(getattr(settings, name, None) for name in LOAD_KEYS)


def keep_out_of_collections() -> None:
    """After a long-lived process (the dashboard, the API server) has loaded its model: every object alive now
    is frozen out of full collections (the module docstring says why)."""
    gc.collect()
    gc.freeze()


class ModelSlot:
    """Holds this process's one engine; asking for another model unloads the current one first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: LoadKey | None = None
        self.engine: Engine | None = None

    def loaded(self, settings: Settings) -> Engine | None:
        """The engine already loaded for these settings (the other settings applied to it), else None;
        never waits and never loads."""
        engine = self.engine
        if engine is None or self.key != load_key(settings):
            return None
        engine.settings = settings
        return engine

    def get(self, settings: Settings, progress: ProgressCallback | None = None) -> Engine:
        """The engine for these settings, loading it (reporting to `progress`) when it is not the loaded one."""
        with self.lock:
            if (engine := self.loaded(settings)) is not None:
                return engine
            # Resolve and pre-flight the new model first (no weights yet; the old one's GPU memory counts as
            # free): a mistyped path or a model that cannot fit must not cost the loaded model.
            backend = create_backend(settings, replacing=self.engine.backend if self.engine else None)
            self.release()
            backend.load(progress)
            self.engine, self.key = Engine(backend=backend, settings=settings), load_key(settings)
            keep_out_of_collections()
            return self.engine

    def release(self) -> None:
        """Unload the current model, if any (its GPU memory is returned)."""
        if self.engine is not None:
            engine, self.engine, self.key = self.engine, None, None
            close_scheduler_for(engine)  # stop its queue worker first: nothing may run on an unloaded model
            gc.unfreeze()  # the model's cycles become collectable again (the module docstring says why)
            engine.backend.unload()

    def is_loading(self, settings: Settings) -> bool:
        """Whether another caller is loading a model right now and these settings are not already served."""
        return self.lock.locked() and self.key != load_key(settings)
