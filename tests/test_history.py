"""The history database: migrations, records and images, filters and paging in SQL, exports, durability."""
from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from core.history import HistoryEntry, HistoryFilter, HistoryStore, differences, migrations, queries
from core.inputs import images
from core.inputs.samples import by_id as sample

ROOT = Path(__file__).resolve().parent.parent


def _entry(**changes) -> HistoryEntry:
    base = HistoryEntry(session_id="aaaaaaaaaaaa", page="documents", question="图中表格第三列第一行的数值是多少？",
                        status="answered", answer="136.2", template_id="doc-cell-zh", template_hash="h1",
                        timings={"total": 1.25}, peak_memory_gb={"cuda:0": 15.2, "cuda:1": 8.5},
                        stamp={"model": "m", "generation": {"max_new_tokens": 64}})
    return replace(base, **changes)


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(tmp_path / "history.sqlite3")


def test_a_new_database_is_migrated_in_wal_mode(store: HistoryStore) -> None:
    with store.connect() as db:
        names = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name")]
        assert names == [fn.__name__ for fn in migrations.MIGRATIONS]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"idx_queries_session", "idx_queries_page", "idx_queries_template", "idx_queries_created"} <= indexes


def test_reopening_runs_only_new_migrations(store: HistoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    with store.connect() as db:
        assert migrations.apply(db) == []

    def m999_reviews(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE m999_probe (id INTEGER PRIMARY KEY)")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, m999_reviews])
    HistoryStore(store.path)
    with store.connect() as db:
        assert db.execute("SELECT count(*) FROM _migrations WHERE name = 'm999_reviews'").fetchone()[0] == 1
        assert migrations.apply(db) == []


def test_a_failing_migration_leaves_nothing_half_done(store: HistoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def m998_broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half (id INTEGER)")
        db.execute("THIS IS NOT SQL")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, m998_broken])
    with pytest.raises(sqlite3.OperationalError):
        HistoryStore(store.path)
    with store.connect() as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0


# `sqlite3 .dump` of a database the code before issue 13 made (entries, then the analysis tables that
# history_tables.ready() added), with one answered query; gzipped: it is the past, never edited.
OLD_DATABASE = ROOT / "tests" / "fixtures" / "history_before_13.sql.gz"
ADDED_AFTER_13 = ["m003_queue_time", "m104_conversation_turns", "m105_message_ids"]  # migrations that database has not seen


def _schema(path: Path) -> dict[str, str]:
    with closing(sqlite3.connect(path)) as db:
        return {name: " ".join(sql.split()) for name, sql in db.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name != '_migrations'")}


def _old_database(path: Path, *, without: tuple[str, ...] = ()) -> Path:
    """The fixture's database (made by the code before the migrations list was one), less some tables."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(gzip.decompress(OLD_DATABASE.read_bytes()).decode())
        for table in without:
            db.execute(f"DROP TABLE {table}")
    return path


def test_a_database_made_by_the_old_code_opens_without_migrating_again(tmp_path: Path) -> None:
    old = _old_database(tmp_path / "old.sqlite3")
    with closing(sqlite3.connect(old)) as db:
        before = db.execute("SELECT name, applied_at FROM _migrations ORDER BY name").fetchall()
    store = HistoryStore(old)
    with store.connect() as db:
        after = db.execute("SELECT name, applied_at FROM _migrations ORDER BY name").fetchall()
        assert migrations.apply(db) == []
    # the old code's migrations are not run again (their records kept as they were); only those added since run
    assert [row for row in after if row in before] == before
    assert [row[0] for row in after if row not in before] == ADDED_AFTER_13
    assert [name for name, _ in before] == [fn.__name__ for fn in migrations.MIGRATIONS
                                           if fn.__name__ not in ADDED_AFTER_13]
    assert store.get(1).question == "q?" and store.count() == 1
    # a new database gets exactly the schema the old code built, tables and indexes alike
    assert _schema(HistoryStore(tmp_path / "new.sqlite3").path) == _schema(old)


def test_an_old_database_without_the_analysis_tables_gets_only_those(tmp_path: Path) -> None:
    # What the old code left when Compare, Batch and Review were never opened: only m001 and m002 applied.
    old = _old_database(tmp_path / "old.sqlite3", without=(
        "reviews", "batch_items", "batch_images", "batches", "compare_cells", "compare_groups"))
    with closing(sqlite3.connect(old, isolation_level=None)) as db:
        db.execute("DELETE FROM _migrations WHERE name > 'm100'")
        assert migrations.apply(db) == ["m003_queue_time", "m101_compare_groups", "m102_batches", "m103_reviews",
                                        "m104_conversation_turns", "m105_message_ids"]
    assert _schema(old) == _schema(HistoryStore(tmp_path / "new.sqlite3").path)


def test_record_and_read_back_with_images_stored_once(store: HistoryStore) -> None:
    data = sample("homework-geometry").read()
    prepared = images.prepare(data)
    first = store.record(_entry(image_hashes=(prepared.sha256,), image_notes=prepared.notes), ((data, prepared),))
    second = store.record(_entry(image_hashes=(prepared.sha256,)), ((data, prepared),))
    assert (first.id, second.id) == (1, 2) and first.created_at.endswith("+00:00")
    back = store.get(1)
    assert back == first
    assert back.peak_memory_gb == {"cuda:0": 15.2, "cuda:1": 8.5} and back.image_notes == prepared.notes
    stored = store.image(prepared.sha256)
    assert stored.data == data and (stored.width, stored.height) == (1080, 1350)
    assert stored.thumbnail[:2] == b"\xff\xd8" and max(images.prepare(stored.thumbnail).image.size) <= 320
    with store.connect() as db:
        assert db.execute("SELECT count(*) FROM images").fetchone()[0] == 1
    assert store.get(99) is None and store.image("0" * 64) is None


def test_unknown_status_is_refused(store: HistoryStore) -> None:
    with pytest.raises(ValueError):
        store.record(_entry(status="maybe"))


def _fill(store: HistoryStore) -> None:
    day = dt.datetime(2025, 3, 1, 12, tzinfo=dt.UTC)
    rows = [
        _entry(session_id="s1" * 6, page="documents", created_at=day.isoformat()),
        _entry(session_id="s1" * 6, page="education", template_id="edu-steps-zh", answer="CD=2cm",
               created_at=(day + dt.timedelta(days=1)).isoformat()),
        _entry(session_id="s2" * 6, page="moderation", template_id="mod-checklist-zh", verdict="unparsed",
               answer="50%_off 最便宜", created_at=(day + dt.timedelta(days=2)).isoformat()),
        _entry(session_id="s2" * 6, page="playground", template_id="", status="failed", answer="",
               error="The question is empty.", error_type="QuestionError",
               created_at=(day + dt.timedelta(days=2, hours=11)).isoformat()),
    ]
    for row in rows:
        store.record(row)


@pytest.mark.parametrize(("flt", "ids"), [
    (HistoryFilter(), [4, 3, 2, 1]),
    (HistoryFilter(session_id="s1" * 6), [2, 1]),
    (HistoryFilter(pages=("moderation", "playground")), [4, 3]),
    (HistoryFilter(template_id="edu-steps-zh"), [2]),
    (HistoryFilter(status="failed"), [4]),
    (HistoryFilter(verdict="unparsed"), [3]),
    (HistoryFilter(date_from=dt.date(2025, 3, 2), date_to=dt.date(2025, 3, 2)), [2]),
    (HistoryFilter(date_from=dt.date(2025, 3, 3)), [4, 3]),
    (HistoryFilter(text="cd=2"), [2]),  # the answer, case-insensitively
    (HistoryFilter(text="第三列"), [3, 2, 1]),  # the question (the failed row asked something else)
    (HistoryFilter(text="%_"), [3]),  # LIKE wildcards are matched literally
    (HistoryFilter(text="' OR 1=1 --"), []),  # bound as a parameter, never spliced into SQL
    (HistoryFilter(session_id="s2" * 6, text="最便宜"), [3]),
])
def test_filters(store: HistoryStore, flt: HistoryFilter, ids: list[int]) -> None:
    _fill(store)
    with store.connect() as db:
        db.execute("UPDATE queries SET question = 'other' WHERE id = 4")
    listing = queries.listing(store, flt)
    assert [r.id for r in listing.rows] == ids and listing.total == len(ids) and not listing.total_is_capped


def test_paging_and_capped_count(store: HistoryStore) -> None:
    for i in range(7):
        store.record(_entry(question=f"q{i}"))
    page2 = queries.listing(store, HistoryFilter(text="q"), page=2, page_size=3)
    assert [r.id for r in page2.rows] == [4, 3, 2] and page2.total == 7
    capped = queries.listing(store, HistoryFilter(text="q"), page_size=3, count_cap=5)
    assert capped.total == 5 and capped.total_is_capped


def test_listing_uses_the_indexes(store: HistoryStore) -> None:
    for flt, index in ((HistoryFilter(session_id="x"), "idx_queries_session"),
                       (HistoryFilter(template_id="x"), "idx_queries_template"),
                       (HistoryFilter(pages=("documents",)), "idx_queries_page")):
        where, params = queries.where_clause(flt)
        with store.connect() as db:
            plan = " ".join(str(r) for r in db.execute(
                f"EXPLAIN QUERY PLAN SELECT id FROM queries{where} ORDER BY id DESC LIMIT 50", params))
        assert index in plan


def test_options_list_pages_templates_and_recent_sessions(store: HistoryStore) -> None:
    _fill(store)
    found = queries.options(store)
    assert found.pages == ("documents", "education", "moderation", "playground")
    assert found.template_ids == ("doc-cell-zh", "edu-steps-zh", "mod-checklist-zh")
    assert found.sessions == ("s2" * 6, "s1" * 6)


def test_exports_hold_every_filtered_row_and_column(store: HistoryStore) -> None:
    _fill(store)
    flt = HistoryFilter(session_id="s2" * 6)
    rows = list(csv.DictReader(io.StringIO(queries.export_csv(store, flt))))
    assert [r["id"] for r in rows] == ["4", "3"] and tuple(rows[0]) == queries.EXPORT_COLUMNS
    assert json.loads(rows[1]["peak_memory_gb"]) == {"cuda:0": 15.2, "cuda:1": 8.5}
    assert rows[0]["error_type"] == "QuestionError" and rows[1]["answer"] == "50%_off 最便宜"
    data = json.loads(queries.export_json(store, flt))
    assert [r["id"] for r in data] == [4, 3] and data[1]["stamp"]["generation"] == {"max_new_tokens": 64}


def test_stamp_differences_are_spelled_out() -> None:
    old = {"model": "m", "dtype": "float32", "generation": {"max_new_tokens": 64, "seed": None}}
    new = {"model": "m", "dtype": "bfloat16", "generation": {"max_new_tokens": 32, "seed": None}, "torch": "2.13"}
    assert differences(old, new) == [
        "dtype: float32 → bfloat16", "generation.max_new_tokens: 64 → 32", "torch: — → 2.13"]
    assert differences(old, old) == []


WRITER = textwrap.dedent("""
    import sys, time
    from core.history import HistoryEntry, HistoryStore
    store = HistoryStore(sys.argv[1])
    for i in range(20):
        store.record(HistoryEntry(session_id="kill", page="documents", question=f"q{i}", status="answered"))
        print("committed", i + 1, flush=True)
    with store.connect() as db:  # a query's row half-written when the process dies
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO queries (created_at, session_id, page, question, status) "
                   "VALUES ('x', 'kill', 'documents', 'in flight', 'answered')")
        print("in-flight", flush=True)
        time.sleep(60)
""")


def test_a_process_killed_mid_write_loses_only_that_row(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = []
    for line in process.stdout:
        lines.append(line.strip())
        if line.startswith("in-flight"):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL and lines[-2] == "committed 20"
    store = HistoryStore(path)
    with store.connect() as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [r.question for r in queries.listing(store, HistoryFilter()).rows] == [f"q{i}" for i in range(19, -1, -1)]
    store.record(HistoryEntry(session_id="after", page="documents", question="next", status="answered"))
    assert store.count() == 21


def test_one_builder_turns_an_answer_or_a_failure_into_an_entry(engine) -> None:
    from core.errors import QuestionError
    from core.statuses import EntryStatus

    prepared = engine.prepare_image(sample("homework-geometry").read())
    answer = engine.ask([prepared], "What is this?", engine.default_generation(max_new_tokens=4)).collect()
    entry = HistoryEntry.from_answer(answer, session_id="s", page="documents", question="What is this?",
                                     image_hashes=(prepared.sha256,), elapsed_s=99.0)
    assert entry.status is EntryStatus.ANSWERED and entry.answer == answer.text
    assert (entry.input_tokens, entry.output_tokens, entry.truncated) == (answer.input_tokens, 4, answer.truncated)
    assert entry.timings == {"queue": answer.timings.queue, "preprocess": answer.timings.preprocess,
                             "vision": answer.timings.vision, "prefill": answer.timings.prefill, "decode": answer.timings.decode,
                             "total": answer.timings.total}  # the answer's clock wins over elapsed_s
    failed = HistoryEntry.from_answer(None, session_id="s", page="api", question="?", error=QuestionError("too long"),
                                      elapsed_s=0.5)
    assert (failed.status, failed.error, failed.error_type, failed.timings) == (
        EntryStatus.FAILED, "too long", "QuestionError", {"total": 0.5})
    stopped = HistoryEntry.from_answer(None, session_id="s", page="p", question="?", status=EntryStatus.STOPPED,
                                       text="partial")
    cancelled = HistoryEntry.from_answer(None, session_id="s", page="api", question="?", status=EntryStatus.STOPPED)
    assert stopped.truncated and stopped.answer == "partial" and not cancelled.truncated and cancelled.answer == ""
