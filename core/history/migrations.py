"""The history database's schema, as numbered migrations applied in order when the database opens.

As in simonw/llm: each migration is a function `mNNN_what(db)`, registered in MIGRATIONS in order; the
names of those already applied live in the `_migrations` table, so opening a database (HistoryStore)
runs only the new ones, each in its own transaction. This is the one list: entries (m001-m003) and the
analysis tables (m101-m103), conversations (m104), message ids (m105). Never edit or rename a released
migration: add the next number.
"""
from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_queries(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE queries (
            id INTEGER PRIMARY KEY,
            created_at TEXT NOT NULL,              -- ISO-8601 UTC, sorts as text
            session_id TEXT NOT NULL,
            page TEXT NOT NULL,
            template_id TEXT NOT NULL DEFAULT '',  -- '' for a free question
            template_hash TEXT NOT NULL DEFAULT '',
            question TEXT NOT NULL,
            image_sha256 TEXT NOT NULL DEFAULT '',  -- the first image; all of them in image_hashes
            image_hashes TEXT NOT NULL DEFAULT '[]',
            image_notes TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL,                   -- answered | failed | stopped
            answer TEXT NOT NULL DEFAULT '',
            truncated INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            tokens_per_s REAL NOT NULL DEFAULT 0,
            total_s REAL NOT NULL DEFAULT 0,
            timings TEXT NOT NULL DEFAULT '{}',
            peak_memory_gb TEXT NOT NULL DEFAULT '{}',
            error TEXT NOT NULL DEFAULT '',
            error_type TEXT NOT NULL DEFAULT '',
            verdict TEXT NOT NULL DEFAULT '',       -- moderation: pass | needs_review | reject | unparsed
            verdict_detail TEXT NOT NULL DEFAULT '{}',
            stamp TEXT NOT NULL DEFAULT '{}',       -- reproducibility stamp (model, dtype, versions, ...)
            rerun_of INTEGER REFERENCES queries(id)
        )
    """)
    db.execute("""
        CREATE TABLE images (
            sha256 TEXT PRIMARY KEY,                -- of the uploaded bytes
            data BLOB NOT NULL,                     -- the upload as given, for re-runs
            thumbnail BLOB NOT NULL,                -- JPEG of the prepared image, at most 320 px
            width INTEGER NOT NULL,                 -- of the prepared image
            height INTEGER NOT NULL,
            created_at TEXT NOT NULL
        )
    """)


@migration
def m002_indexes(db: sqlite3.Connection) -> None:
    # Every filter the History page offers, each paired with id so "newest first" paging stays in the index.
    for name, columns in (
        ("session", "session_id, id"), ("page", "page, id"), ("template", "template_id, id"),
        ("created", "created_at"), ("status", "status, id"), ("verdict", "verdict, id"), ("image", "image_sha256"),
    ):
        db.execute(f"CREATE INDEX idx_queries_{name} ON queries ({columns})")


@migration
def m003_queue_time(db: sqlite3.Connection) -> None:
    """Seconds the question waited in the model's queue (issue 17). NULL on rows recorded before it was
    measured (their `total_s` left the wait out), so old rows read as "not measured", not as "no wait"."""
    db.execute("ALTER TABLE queries ADD COLUMN queue_s REAL")


# Compare, Batch and Review's tables. Numbered from 101 because they were first registered by a
# separate module (history_tables); the names stay as databases in use recorded them.


@migration
def m101_compare_groups(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE compare_groups (
            id INTEGER PRIMARY KEY,
            created_at TEXT NOT NULL,
            session_id TEXT NOT NULL,
            spec TEXT NOT NULL,                     -- JSON: columns, images (name, sha256), generation, model
            rerun_of INTEGER REFERENCES compare_groups(id)
        )
    """)
    db.execute("""
        CREATE TABLE compare_cells (
            group_id INTEGER NOT NULL REFERENCES compare_groups(id),
            image_index INTEGER NOT NULL,
            column_index INTEGER NOT NULL,
            query_id INTEGER NOT NULL REFERENCES queries(id),
            batched INTEGER NOT NULL DEFAULT 0,     -- answered inside one batched generate() call
            PRIMARY KEY (group_id, image_index, column_index)
        )
    """)
    db.execute("CREATE INDEX idx_compare_cells_query ON compare_cells (query_id)")


@migration
def m102_batches(db: sqlite3.Connection) -> None:
    """Batches keep their images' bytes and every item's status, so one resumes after a restart."""
    db.execute("""
        CREATE TABLE batches (
            id INTEGER PRIMARY KEY,
            created_at TEXT NOT NULL,
            session_id TEXT NOT NULL,
            status TEXT NOT NULL,                   -- running | paused | done
            columns TEXT NOT NULL,                  -- JSON: label, question, template_id, template_hash
            generation TEXT NOT NULL,               -- JSON: GenerationSettings
            skipped TEXT NOT NULL DEFAULT '[]',     -- JSON: files not run, with why
            finished_at TEXT NOT NULL DEFAULT ''
        )
    """)
    db.execute("""
        CREATE TABLE batch_items (
            batch_id INTEGER NOT NULL REFERENCES batches(id),
            image_position INTEGER NOT NULL,
            column_index INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending', -- pending | done | failed
            query_id INTEGER REFERENCES queries(id),
            error TEXT NOT NULL DEFAULT '',
            seconds REAL NOT NULL DEFAULT 0,
            finished_at TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (batch_id, image_position, column_index)
        )
    """)
    db.execute("CREATE INDEX idx_batch_items_status ON batch_items (batch_id, status)")
    db.execute("""
        CREATE TABLE batch_images (
            batch_id INTEGER NOT NULL REFERENCES batches(id),
            position INTEGER NOT NULL,
            name TEXT NOT NULL,                     -- as uploaded (zip members keep their folders); display only
            sha256 TEXT NOT NULL,
            data BLOB NOT NULL,                     -- kept so an interrupted batch can resume after a restart
            PRIMARY KEY (batch_id, position)
        )
    """)


@migration
def m103_reviews(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE reviews (
            query_id INTEGER PRIMARY KEY REFERENCES queries(id),
            model_verdict TEXT NOT NULL,            -- the verdict the analyst saw
            label TEXT NOT NULL,                    -- the analyst's: pass | needs_review | reject
            agreed INTEGER NOT NULL,
            reason TEXT NOT NULL DEFAULT '',        -- why it was overridden (one of review.REASONS or free text)
            note TEXT NOT NULL DEFAULT '',
            reviewer TEXT NOT NULL DEFAULT '',
            reviewed_at TEXT NOT NULL
        )
    """)
    db.execute("CREATE INDEX idx_reviews_reviewed_at ON reviews (reviewed_at)")


@migration
def m104_conversation_turns(db: sqlite3.Connection) -> None:
    """A page's conversation: its turns are the rows with the same conversation_id ('' = a single question)."""
    db.execute("ALTER TABLE queries ADD COLUMN conversation_id TEXT NOT NULL DEFAULT ''")
    db.execute("CREATE INDEX idx_queries_conversation ON queries (conversation_id, id)")


@migration
def m105_message_ids(db: sqlite3.Connection) -> None:
    """The ids and parameters of the error's and the image notes' sentences (core/messages.py), so the dashboard
    can show them in the analyst's language: {"error": Message JSON, "image_notes": [Message JSON, ...]}."""
    db.execute("ALTER TABLE queries ADD COLUMN message_ids TEXT NOT NULL DEFAULT '{}'")


def apply(db: sqlite3.Connection) -> list[str]:
    """Run every migration not yet recorded; returns the names it ran. `db` must be in autocommit mode."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    ran = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            # Re-check inside the write lock: another process may have just applied it.
            if db.execute("SELECT 1 FROM _migrations WHERE name = ?", (fn.__name__,)).fetchone() is None:
                fn(db)
                db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                           (fn.__name__, dt.datetime.now(dt.UTC).isoformat(timespec="seconds")))
                ran.append(fn.__name__)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return ran
