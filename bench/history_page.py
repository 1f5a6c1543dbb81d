"""How long the History page takes to render as history grows (issue: the dashboard; target < 1 s at 100,000).

    python bench/history_page.py                      # 1,000 and 100,000 rows → bench/results/history_page.json
    python bench/history_page.py --rows 300 --out X   # a quick run (CI smoke test)

For each size: a fresh LOUPE_HOME whose history database is filled with realistic rows (Chinese and
English questions, answers of a few hundred characters, stamps, timings, per-GPU memory; 5% failed,
moderation verdicts, 50 rows per session), then the real dashboard in Streamlit's AppTest: one warm-up
run on the History page (model load and imports are not what is measured), then `--repeats` timed
reruns of the page (SQL queries, DataFrame, the opened entry with its thumbnail, everything the script
draws), unfiltered, with a session filter, a text filter, and a text no row contains (the worst case).
The SQL alone is timed too. CPU only: it needs streamlit, not a GPU.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTIONS = [
    "图中表格第三列第一行的数值是多少？", "这道题的已知条件和求解目标分别是什么？请分点说明。",
    "What is the title of the document in the image? Answer with the title text only.",
    "签名位于右下角吗？请先回答是或否，再说明依据。", "请按从左到右顺序列出4个接口名称。",
]
PAGES = [("documents", "doc-cell-zh"), ("education", "edu-conditions-zh"), ("documents", "doc-title-en"),
         ("playground", "general-location-zh"), ("moderation", "mod-checklist-zh")]
ANSWER = ("根据图中表格，华东地区八月的销售额为136.2万元，位于第三列第一行。The value is 136.2 (10k CNY). "
          "已知条件：直角三角形ABC，∠C=90°，AB=5cm，BC=3cm，点D在AC上且AD=2cm。求解目标：线段CD的长度。")


def fill(path: Path, rows: int, seed: int = 7) -> None:
    """Write `rows` history rows through the real schema (HistoryStore migrates), in one transaction."""
    from core.history import HistoryStore
    from core.history.store import thumbnail
    from core.inputs.images import prepare
    from core.inputs.moderation import parse_verdict
    from core.inputs.samples import SAMPLES
    from core.inputs.templates import by_id

    store = HistoryStore(path)
    rng = random.Random(seed)
    prepared = [(s.read(), prepare(s.read())) for s in SAMPLES]
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    stamp = json.dumps({"model": "internlm-xcomposer2d5-7b", "backend": "xcomposer", "dtype": "bfloat16",
                        "attn_implementation": "flash_attention_2", "device": "cuda",
                        "device_map": "GPU0: layers 0-15 (15.2 GB) · GPU1: layers 16-31 (8.5 GB)",
                        "generation": {"max_new_tokens": 1024, "do_sample": False, "num_beams": 1},
                        "max_width": 1280, "torch": "2.11.0", "transformers": "5.17.0"})
    checklist = by_id("mod-checklist-zh").output.checklist
    verdict = json.dumps(parse_verdict(ANSWER, checklist).to_json(), ensure_ascii=False)
    values = []
    for i in range(rows):
        page, template = PAGES[i % len(PAGES)]
        failed = rng.random() < 0.05
        data, image = prepared[i % len(prepared)]
        values.append((
            (start + dt.timedelta(seconds=30 * i)).isoformat(timespec="milliseconds"), f"{i // 50:012x}", page,
            template, "0" * 64, QUESTIONS[i % len(QUESTIONS)], image.sha256, json.dumps([image.sha256]),
            json.dumps(list(image.notes), ensure_ascii=False), "failed" if failed else "answered",
            "" if failed else ANSWER * rng.randint(1, 4), int(rng.random() < 0.1), 420, rng.randint(20, 400),
            rng.uniform(20, 40), rng.uniform(1, 5),
            json.dumps({"preprocess": 0.1, "vision": 0.8, "prefill": 0.7, "decode": 1.5, "total": 3.2}),
            json.dumps({"cuda:0": 15.3, "cuda:1": 9.2}),
            "The GPU ran out of memory while answering." if failed else "", "GenerationError" if failed else "",
            "unparsed" if page == "moderation" else "", verdict if page == "moderation" else "{}", stamp,
        ))
    with store.transaction() as db:
        for data, image in prepared:
            db.execute("INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?, ?, ?)",
                       (image.sha256, data, thumbnail(image.image), image.width, image.height, start.isoformat()))
        db.executemany(
            "INSERT INTO queries (created_at, session_id, page, template_id, template_hash, question, image_sha256, "
            "image_hashes, image_notes, status, answer, truncated, input_tokens, output_tokens, tokens_per_s, "
            "total_s, timings, peak_memory_gb, error, error_type, verdict, verdict_detail, stamp) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
    with store.connect() as db:
        db.execute("ANALYZE")


def time_sql(path: Path, repeats: int) -> float:
    from core.history import HistoryFilter, HistoryStore, queries

    store = HistoryStore(path)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        queries.options(store)
        queries.listing(store, HistoryFilter())
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def time_page(repeats: int) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=600).run()
    at.switch_page("../pages/history.py").run()
    assert not at.exception, [e.value for e in at.exception]
    results: dict[str, float] = {}
    views = {
        "unfiltered": lambda: None,
        "session_filter": lambda: at.selectbox(key="history-session").set_value(
            at.selectbox(key="history-session").options[-1]),
        "text_filter": lambda: at.text_input(key="history-text").set_value("136.2"),
        # The worst case: a text no row has, so LIKE reads every question and answer to count nothing.
        "text_no_match": lambda: at.text_input(key="history-text").set_value("不存在的词"),
    }
    for view, apply in views.items():
        apply()
        at.run()  # the first run of a view pays for the widget change; time the reruns after it
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - started)
        assert not at.exception and (at.dataframe or view == "text_no_match"), view
        results[f"{view}_median_s"] = round(statistics.median(times), 4)
        results[f"{view}_max_s"] = round(max(times), 4)
    return results


def measure(rows: int, repeats: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="loupe-bench-history-") as home:
        os.environ["LOUPE_HOME"] = home
        os.environ["LOUPE_CONFIG"] = ""  # no settings file: the defaults and LOUPE_HOME only
        path = Path(home) / "history.sqlite3"
        started = time.perf_counter()
        fill(path, rows)
        fill_s = time.perf_counter() - started
        result: dict[str, object] = {"rows": rows, "fill_s": round(fill_s, 2),
                                     "db_mb": round(path.stat().st_size / 1e6, 1),
                                     "sql_median_s": round(time_sql(path, repeats), 4)}
        result.update(time_page(repeats))
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000,100000", help="comma-separated history sizes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "history_page.json"))
    args = parser.parse_args()
    import streamlit

    sizes = [measure(int(n), args.repeats) for n in args.rows.split(",")]
    report = {
        "device": "cpu", "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "target_s": 1.0, "python": platform.python_version(), "streamlit": streamlit.__version__,
        "sqlite": sqlite3.sqlite_version, "repeats": args.repeats,
        "what": "History page rerun in AppTest (SQL + DataFrame + opened entry), after one warm-up run",
        "sizes": sizes,
        "meets_target": all(s[k] < 1.0 for s in sizes for k in s if str(k).endswith("median_s")),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
