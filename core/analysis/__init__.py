"""Analysis: what analysts do with many answers — Compare (images × prompts), the Review of moderation
verdicts, Batch runs over uploads and zips (and batch_runner, the background threads that run them,
at most one per batch), and the word diff between two answers.

Logic only: the rows they read and write, and every SQL statement, live in core.history. May import
core.serving, core.backends (to describe a failure), core.inputs, core.history, core.records,
core.statuses, core.settings, core.errors and core.messages.
"""
