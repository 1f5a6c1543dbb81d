"""The dashboard's Streamlit settings that the product depends on, read as Streamlit reads them."""
from __future__ import annotations

import tomllib
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml"


def test_no_full_garbage_collection_after_every_script_run() -> None:
    # Streamlit's default gc.collect(2) after each run (fragment runs included) cost ~0.5 s of GIL-holding CPU
    # with torch loaded; the status line's 1 s fragment in two tabs kept a core busy and starved generation.
    assert tomllib.loads(CONFIG.read_text())["runner"]["postScriptGC"] is False


def test_served_on_loopback_without_error_details() -> None:
    config = tomllib.loads(CONFIG.read_text())
    assert config["server"]["address"] == "127.0.0.1" and config["client"]["showErrorDetails"] == "none"


def test_no_file_watching_in_the_served_dashboard() -> None:
    # Streamlit watches every imported module of the project for "source changed" (runOnSave is off anyway):
    # its polling threads woke ~100 times a second, each taking the GIL from generation, whose thread then
    # waited for a core again on a busy machine (issue #17 item 1).
    assert tomllib.loads(CONFIG.read_text())["server"]["fileWatcherType"] == "none"
