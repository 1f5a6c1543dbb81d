"""Serving: putting questions to a loaded model — the engine (a backend plus settings), the fair queue and
its admission check, tickets that stream an answer, the ask-and-record path every page takes, the model's
lifecycle, and the OpenAI-compatible API.

May import everything in core/ except core.analysis and core.commands; nothing imports it from core.models
or core.backends.
"""
