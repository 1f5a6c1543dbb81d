"""The tables Compare, Batch and Review add to the history database, as numbered history migrations.

They follow core/history/migrations.py's pattern (`mNNN_what(db)`, applied once, recorded in
`_migrations`) and are numbered from 101 so they can never take a number the history module itself
will use next. They register when this module is imported; `ready(store)` applies any that a store
opened before that import has not run yet (a cheap check when there is nothing to do).
"""
from __future__ import annotations

import sqlite3

from core.history import HistoryStore, migrations


@migrations.migration
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


@migrations.migration
def m102_batches(db: sqlite3.Connection) -> None:
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
        CREATE TABLE batch_images (
            batch_id INTEGER NOT NULL REFERENCES batches(id),
            position INTEGER NOT NULL,
            name TEXT NOT NULL,                     -- as uploaded (zip members keep their folders); display only
            sha256 TEXT NOT NULL,
            data BLOB NOT NULL,                     -- kept so an interrupted batch can resume after a restart
            PRIMARY KEY (batch_id, position)
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


@migrations.migration
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


def ready(store: HistoryStore) -> HistoryStore:
    """The store, with these tables in it."""
    with store.connect() as db:
        migrations.apply(db)
    return store
