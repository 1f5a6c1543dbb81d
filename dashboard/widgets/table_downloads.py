"""The two downloads every exported table gets, side by side: CSV (UTF-8 with a BOM, for Excel) and XLSX.

The files are built by core/table_export.py when the button is clicked (Streamlit's deferred download), from
the table the page's callable returns; pages never format a file themselves."""
from __future__ import annotations

from collections.abc import Callable

from streamlit.delta_generator import DeltaGenerator

from core.table_export import CSV_MIME, XLSX_MIME, ExportTable, csv_bytes, xlsx_bytes


def table_downloads(csv_slot: DeltaGenerator, xlsx_slot: DeltaGenerator, make_table: Callable[[], ExportTable], *,
                    file_stem: str, key: str, help: str | None = None, label: str = "Export") -> None:
    """`label` CSV in `csv_slot` and `label` XLSX in `xlsx_slot`, both of the table `make_table()` builds."""
    csv_slot.download_button(f"{label} CSV".strip(), data=lambda: csv_bytes(make_table()), file_name=f"{file_stem}.csv",
                             mime=CSV_MIME, icon=":material/download:", key=f"{key}-csv", help=help)
    xlsx_slot.download_button(f"{label} XLSX".strip(), data=lambda: xlsx_bytes(make_table()),
                              file_name=f"{file_stem}.xlsx", mime=XLSX_MIME, icon=":material/table_view:",
                              key=f"{key}-xlsx", help=help)
