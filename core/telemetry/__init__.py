"""GPU telemetry: the one GPU reader (gpu_reader.py: NVML through nvml.py, torch's allocator beside it, all as
GpuSnapshot records), the sampler thread and its ring buffer, and stage markers for the memory chart.

May import core.records, core.errors, core.settings and core.table_export only.
"""
