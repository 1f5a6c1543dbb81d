"""What the subcommands share: quiet library logging and reading an image file into bytes."""
from __future__ import annotations

from pathlib import Path

from core.errors import ImageError


def quiet_libraries() -> None:
    """Progress bars and advisories from transformers would break the one-line error contract."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore")


def read_image_file(path: str) -> bytes:
    file = Path(path)
    if not file.is_file():
        raise ImageError(f"No image file at {path}.")
    return file.read_bytes()
