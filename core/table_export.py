"""Every exported table as the files an analyst opens in Excel: CSV with a UTF-8 byte-order mark, and XLSX.

One ExportTable (named columns, rows of plain values) is built by the module that owns the rows (history's
listing, a batch's results, the reviews, the GPU samples); `csv_bytes` and `xlsx_bytes` turn it into the two
downloads, so every page exports the same way. Nested values (timings, stamps, checklist items) become JSON
text in their cell, Chinese kept as it is.

Decisions:
- CSV downloads start with the UTF-8 BOM: without it Excel reads the file in the system's ANSI code page and
  shows Chinese as mojibake. `csv_text` (no BOM) stays for code that reads the CSV back.
- Cells hold text from outside Loupe (questions, model answers, file names). In the XLSX a text cell is always
  text, never a formula, whatever it starts with; in the CSV, whose cells Excel evaluates, text starting with
  = + - @ (or a tab / carriage return) gets a leading apostrophe, the usual guard against formula injection.
- XLSX cells cannot hold control characters (removed) or more than 32,767 characters (cut, with a mark).
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

BOM = "\ufeff"
CSV_MIME = "text/csv"
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XLSX_CELL_LIMIT = 32_767  # Excel's most characters in one cell
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NOT_IN_XLSX = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # control characters XML 1.0 cannot carry
_CUT_MARK = " [cut: Excel holds 32,767 characters per cell]"


@dataclass(frozen=True)
class ExportTable:
    """A table to export: its name (the sheet's title and the files' stem), columns, and rows of plain values."""

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    @classmethod
    def from_dicts(cls, name: str, columns: Iterable[str], rows: Iterable[Mapping[str, Any]]) -> ExportTable:
        """Rows given as dicts (missing keys are empty cells); dicts and lists inside become JSON text."""
        names = tuple(columns)
        return cls(name, names, tuple(tuple(_plain(row.get(column)) for column in names) for row in rows))

    @property
    def csv_name(self) -> str:
        return f"{self.name}.csv"

    @property
    def xlsx_name(self) -> str:
        return f"{self.name}.xlsx"


@dataclass(frozen=True)
class ExportFiles:
    """Both downloads of one table, built at one moment (a snapshot of data that keeps changing)."""

    table: ExportTable
    csv: bytes
    xlsx: bytes


def export_files(table: ExportTable) -> ExportFiles:
    """The CSV and the XLSX of `table`, built now."""
    return ExportFiles(table, csv_bytes(table), xlsx_bytes(table))


def _plain(value: Any) -> Any:
    if isinstance(value, dict | list | tuple):
        return json.dumps(list(value) if isinstance(value, tuple) else value, ensure_ascii=False)
    return value


def csv_text(table: ExportTable) -> str:
    """The table as CSV text, without a BOM and with every value as it is (for code that reads it back)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    return buffer.getvalue()


def _guarded(value: Any) -> Any:
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def csv_bytes(table: ExportTable) -> bytes:
    """The CSV download: UTF-8 with a BOM (Excel then reads Chinese correctly), formula-like text guarded."""
    guarded = ExportTable(table.name, table.columns, tuple(tuple(_guarded(v) for v in row) for row in table.rows))
    return (BOM + csv_text(guarded)).encode("utf-8")


def xlsx_bytes(table: ExportTable) -> bytes:
    """The XLSX download: one sheet, a bold frozen header row, text cells that stay text."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    book = Workbook(write_only=True)
    sheet = book.create_sheet(title=_sheet_title(table.name))
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)
    header = []
    for column in table.columns:
        cell = WriteOnlyCell(sheet, value=column)
        cell.font = bold
        header.append(cell)
    sheet.append(header)
    for row in table.rows:
        sheet.append([_xlsx_cell(sheet, value) for value in row])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _xlsx_cell(sheet: Any, value: Any) -> Any:
    from openpyxl.cell import WriteOnlyCell

    if not isinstance(value, str):
        return value
    text = _NOT_IN_XLSX.sub("", value)
    if len(text) > XLSX_CELL_LIMIT:
        text = text[: XLSX_CELL_LIMIT - len(_CUT_MARK)] + _CUT_MARK
    cell = WriteOnlyCell(sheet, value=text)
    cell.data_type = "s"  # openpyxl would make "=..." a formula: outside text is never one
    return cell


def _sheet_title(name: str) -> str:
    """Excel's rules: at most 31 characters, none of []:*?/\\."""
    return re.sub(r"[\[\]:*?/\\]", "-", name)[:31] or "table"
