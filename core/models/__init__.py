"""Models: everything about a model before and around its weights — reading its shape from config.json,
finding its folder (or building the demo model), planning the split over GPUs, the memory model shared by the
planner, the pre-flight check and admission, load progress, and the fast decode loop over loaded weights.

May import core.errors, core.messages, core.records, core.settings, core.inputs and core.telemetry (the one
GPU reader);
never core.serving, core.analysis or core.history.
"""
