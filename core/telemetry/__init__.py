"""GPU telemetry: NVML access (nvml.py), and what is built on it."""
