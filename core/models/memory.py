"""Peak memory around one answer: now read by the one GPU reader; re-exported here until the backends import it."""
from core.telemetry.gpu_reader import peaks_gb, reset_peaks, synchronize  # noqa: F401
