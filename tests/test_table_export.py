"""Exports (issue 17): every exported table as CSV with a UTF-8 BOM and as XLSX, Chinese intact, formulas inert."""
from __future__ import annotations

import csv
import io

from openpyxl import load_workbook

from core.history import HistoryEntry, HistoryFilter, HistoryStore, queries
from core.table_export import BOM, ExportTable, csv_bytes, csv_text, xlsx_bytes

CHINESE = "图中表格第三列第一行的数值是多少？净含量 500 克"


def _table() -> ExportTable:
    return ExportTable.from_dicts("loupe-history", ("id", "question", "timings", "answer"), [
        {"id": 1, "question": CHINESE, "timings": {"queue": 1.5, "总": 2.0}, "answer": "=HYPERLINK(\"http://x\")"},
        {"id": 2, "question": "bell\x07 and tab", "answer": None},
    ])


def _sheet(data: bytes) -> list[tuple]:
    book = load_workbook(io.BytesIO(data))
    return [tuple(row) for row in book.worksheets[0].iter_rows(values_only=True)]


def test_the_csv_download_starts_with_the_bom_and_keeps_chinese() -> None:
    data = csv_bytes(_table())
    assert data.startswith(BOM.encode("utf-8")) and data[:3] == b"\xef\xbb\xbf"
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0] == ["id", "question", "timings", "answer"]
    assert rows[1][:3] == ["1", CHINESE, '{"queue": 1.5, "总": 2.0}']
    assert rows[1][3] == "'=HYPERLINK(\"http://x\")"  # Excel would run it: guarded
    assert not csv_text(_table()).startswith(BOM)  # the text for code that reads it back has none


def test_chinese_round_trips_through_the_xlsx_and_text_never_becomes_a_formula() -> None:
    rows = _sheet(xlsx_bytes(_table()))
    assert rows[0] == ("id", "question", "timings", "answer")
    assert rows[1] == (1, CHINESE, '{"queue": 1.5, "总": 2.0}', "=HYPERLINK(\"http://x\")")
    book = load_workbook(io.BytesIO(xlsx_bytes(_table())))
    assert book.worksheets[0]["D2"].data_type == "s" and book.worksheets[0].title == "loupe-history"
    assert rows[2] == (2, "bell and tab", None, None)  # a control character Excel cannot hold is dropped


def test_a_cell_longer_than_excel_holds_is_cut_with_a_mark() -> None:
    table = ExportTable("t", ("answer",), (("答" * 40_000,),))
    (cell,) = _sheet(xlsx_bytes(table))[1]
    assert len(cell) == 32_767 and cell.startswith("答" * 100) and cell.endswith("32,767 characters per cell]")


def test_history_exports_its_rows_with_queue_time_in_both_files(tmp_path) -> None:
    store = HistoryStore(tmp_path / "history.sqlite3")
    store.record(HistoryEntry(session_id="s", page="documents", question=CHINESE, status="answered", answer="136.2",
                              timings={"queue": 0.75, "total": 2.5}))
    table = queries.export_table(store, HistoryFilter())
    assert table.columns == queries.EXPORT_COLUMNS and table.name == "loupe-history"
    (row,) = list(csv.DictReader(io.StringIO(csv_bytes(table).decode("utf-8-sig"))))
    assert row["question"] == CHINESE and row["queue_s"] == "0.75"
    header, first = _sheet(xlsx_bytes(table))[:2]
    assert dict(zip(header, first, strict=True))["question"] == CHINESE
    assert csv_text(table) == queries.export_csv(store, HistoryFilter())  # one builder for both
