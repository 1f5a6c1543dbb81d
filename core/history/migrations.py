"""The history database's schema, as numbered migrations applied in order when the database opens.

As in simonw/llm: each migration is a function `mNNN_what(db)`, registered in MIGRATIONS in order; the
names of those already applied live in the `_migrations` table, so opening a database runs only the
new ones, each in its own transaction. Never edit a released migration: add the next number.
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
