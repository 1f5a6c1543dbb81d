"""Analysis: what analysts do with many answers — Compare (images × prompts), moderation verdicts and
their Review, Batch runs over uploads and zips, and the word diff between two answers.

Logic only: the rows they read and write live in core.history. May import core.serving, core.inputs,
core.history, core.records and core.errors.
"""
