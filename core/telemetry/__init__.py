"""GPU telemetry: the one GPU reader (NVML through nvml.py, torch's allocator), the sampler thread and its
ring buffer, and stage markers for the memory chart.

May import core.records, core.errors and core.settings only.
"""
