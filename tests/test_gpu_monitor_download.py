"""The GPU monitor's download (issue 17 item 10: it failed 3 of 9 times): why, and the page's stable snapshot."""
from __future__ import annotations

import io

import pytest
from openpyxl import load_workbook
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.media_file_storage import MediaFileStorageError
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from core.table_export import BOM
from core.telemetry import readout
from tests.app_pages import open_page


def _fetch(storage: MemoryMediaFileStorage, url: str) -> bytes:
    return storage.get_file(url.rsplit("/", 1)[-1]).content


def test_a_download_built_on_click_is_gone_after_two_fragment_runs_but_page_bytes_stay() -> None:
    """Streamlit's own media manager, as the server runs it: the end of every script run, a timed fragment's
    too, sweeps unused media; the GPU monitor has four timed fragments, so several sweeps a second."""
    storage = MemoryMediaFileStorage("/media")
    manager = MediaFileManager(storage)
    deferred = manager.add_deferred(lambda: b"time,gpu\n", "text/csv", "1.2.3", file_name="loupe-telemetry.csv")
    url = manager.execute_deferred(deferred)  # the click: the file is built, its URL goes to the browser
    assert _fetch(storage, url) == b"time,gpu\n"
    manager.remove_orphaned_files()  # a fragment run ends
    manager.remove_orphaned_files()  # another one, before a slow browser fetched the file
    with pytest.raises(MediaFileStorageError):
        _fetch(storage, url)  # the download fails
    static_url = manager.add(BOM.encode() + b"time,gpu\n", "text/csv", "1.2.4", file_name="loupe-telemetry.csv",
                             is_for_static_download=True)
    for _ in range(10):
        manager.remove_orphaned_files()
    assert _fetch(storage, static_url).startswith(BOM.encode())  # bytes the page drew stay until its next full run


def test_the_gpu_monitor_downloads_a_snapshot_as_csv_and_xlsx() -> None:
    at = open_page("gpu_monitor")
    assert "gpu-monitor-samples" not in at.session_state  # nothing is built until asked
    at.button(key="gpu-monitor-snapshot").click().run()
    taken_at, files = at.session_state["gpu-monitor-samples"]
    assert files.csv.startswith(BOM.encode("utf-8")) and files.table.columns == readout.CSV_COLUMNS
    assert len(files.table.rows) >= 1 and any(f"{len(files.table.rows):,} rows, taken at {taken_at}" in c.value
                                              for c in at.caption)
    sheet = load_workbook(io.BytesIO(files.xlsx)).worksheets[0]
    assert sheet.max_row == len(files.table.rows) + 1 and next(sheet.values) == readout.CSV_COLUMNS
    at.run()  # a later run hands the very same bytes to the buttons: the snapshot does not move under the analyst
    assert at.session_state["gpu-monitor-samples"][1] is files
