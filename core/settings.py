"""Where Loupe keeps its data (LOUPE_HOME) and what its settings are (loupe.toml + LOUPE_* overrides).

Resolution order, later wins: built-in defaults < the settings file < environment variables < keyword overrides.
The settings file is `$LOUPE_CONFIG` if set (it must then be an existing file; set it empty for no file), else
`./loupe.toml` (absent is fine: defaults apply). Every field can be overridden by `LOUPE_<FIELD>` in upper case,
e.g. `LOUPE_MODEL=/models/qwen2.5-vl`; environment values are strings parsed to the field's type.

Every value is checked on load (core/setting_rules.py) and the first wrong one is refused with one ConfigError
naming the key, where it came from, the value and what is allowed:
- whole numbers (max_width, max_pixels, ...) must be integers of at least 1: `true` or `12.9` are refused, not
  turned into 1 or 12; durations (stream_timeout_s, sample_*_s) are finite numbers above 0;
- booleans are TOML booleans, or from the environment true/false/1/0 (yes/no/on/off also read);
- backend is auto | transformers | xcomposer | openai, device is auto | cpu | cuda, remote_image_format is
  jpeg | png; remote_max_retries may be 0;
- max_memory_gb is a TOML number or list of numbers, or a string "22.2,22.2" (GB per GPU, GPU0 first);
  it is kept as that comma-separated string;
- interface_language is auto | zh | en (auto: the browser's language, English unless it is Chinese);
- time_zone is auto (the browser's time zone) or an IANA name such as Asia/Shanghai or UTC;
- api_allowed_paths is a TOML list of folders, or one string of folders separated by commas or os.pathsep
  (":" on Linux/macOS, ";" on Windows); it is kept as a comma-separated string, so a folder name may not
  itself contain a comma;
- split is checked for its form ("0-15,16-31", contiguous from layer 0); the layer count is checked when
  the model is known;
- metrics_port is 0 (off) or a TCP port, 1-65535;
- the history database (history_db, else <home>/history.sqlite3) must not be a folder, and the nearest
  folder above it that exists must be a writable folder, so the history store can create it later.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from core.errors import ConfigError

# The project's data files (templates, samples, style); core/ sits beside assets/ in the repository.
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"


@dataclass(frozen=True)
class Settings:
    """All of Loupe's settings, resolved once; pass it around instead of reading the environment."""

    home: Path = Path(".loupe")
    model: str = ""  # local folder or model id in the local HF cache; empty = embedded demo model
    backend: str = "auto"  # auto | transformers | xcomposer | openai
    # Obsolete: Loupe runs no code shipped in a model folder (XComposer2.5 has its own implementation). Still
    # read and checked so old loupe.toml files load; when true the model card notes that it has no effect.
    trust_remote_code: bool = False
    device: str = "auto"  # auto | cpu | cuda
    max_width: int = 1280  # prepared images are at most this wide (never upscaled)
    max_pixels: int = 90_000_000  # larger images are refused as decompression bombs
    max_images: int = 4  # images per question
    max_question_chars: int = 200  # the pages' question box, counted as Unicode characters
    # The API's own limit (core/serving/api.py). Kept at 200 by default: the shard planner and preflight size
    # the KV cache for max_question_chars, so a longer API prompt is a conscious choice (admission still
    # counts each real prompt and refuses one that does not fit).
    api_max_question_chars: int = 200
    max_new_tokens: int = 1024
    stream_timeout_s: float = 120.0  # the answer stream gives up if no token comes for this long
    fast_decode: bool = True  # static-cache compiled greedy decoding where the model allows (core/models/fast_decode.py)
    # The fast path's decode attention: "auto" (Loupe's split-KV kernel where the step is compiled on a GPU, SDPA on
    # the CPU), "flex", "split" or "sdpa". core/models/decode_attention.py says what each is and what was measured.
    decode_attention: str = "auto"
    # Rows of the fast path's cache: prompts decoded together (Compare's templates, and questions from the queue
    # by continuous batching); each row holds its own KV cache. 1 until an H200 record shows the gain (on the
    # 2-core CPU the step's cost grows with rows); 4-8 on a GPU is the intended use.
    fast_decode_rows: int = 1
    history_db: str = ""  # empty = <home>/history.sqlite3
    max_memory_gb: str = ""  # e.g. "22.2,22.2": usable GB per GPU for the shard planner
    split: str = ""  # pinned layer split, e.g. "0-15,16-31" (GPU0 first)
    openai_base_url: str = ""
    openai_api_key: str = ""
    remote_max_in_flight: int = 8  # requests sent to a remote engine at once (it batches them; a hung one blocks no one)
    remote_model: str = ""  # the remote server's model id (from its /v1/models); empty = the only one it serves
    remote_image_format: str = "jpeg"  # jpeg (quality 95, about a third of PNG's bytes) | png (lossless)
    remote_max_retries: int = 2  # the openai client's retries (with backoff) of a refused connection, 408/409/429/5xx
    api_token: str = ""  # bearer token the API server requires; empty = no auth
    dashboard_password: str = ""  # the team's sign-in password for the dashboard (core/access.py); empty = none
    api_allowed_paths: str = ""  # comma-separated folders the API may read local images from
    sample_interval_s: float = 0.5
    sample_window_s: float = 900.0
    metrics_port: int = 0  # Prometheus metrics of the dashboard process on this port (core/serving/metrics.py); 0 = off
    metrics_address: str = "127.0.0.1"  # where that port listens ("0.0.0.0" in a container)
    batch_max_files: int = 200  # images in one batch (uploads, or inside a zip)
    batch_max_mb: int = 200  # the uploads together (a zip counted as uploaded); its unpacked images at most 5x
    interface_language: str = "auto"  # auto | zh | en: the dashboard's language (auto: the browser's)
    time_zone: str = "auto"  # auto (the browser's) or an IANA name: how the dashboard shows times

    @property
    def history_path(self) -> Path:
        return Path(self.history_db) if self.history_db else self.home / "history.sqlite3"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"


def config_path() -> Path | None:
    """The settings file to read, or None for none (LOUPE_CONFIG set empty, or no ./loupe.toml)."""
    named = os.environ.get("LOUPE_CONFIG")
    if named is None:
        path = Path("loupe.toml")
        if not path.exists():
            return None
    elif not named.strip():
        return None
    else:
        path = Path(named).expanduser()
        if not path.exists():  # a typo here must not silently run with the defaults
            raise ConfigError(f"LOUPE_CONFIG is {named!r}, but there is no file there (set it to an existing "
                              "TOML file, or empty for no settings file)")
    if not path.is_file():
        raise ConfigError(f"The settings file {str(path)!r} is a folder, not a file (LOUPE_CONFIG should name a TOML file)")
    return path


def _read_file(path: Path, names: set[str]) -> dict[str, object]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"The settings file {path} cannot be read ({exc.strerror or exc})") from None
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    return data


def load_settings(**overrides: object) -> Settings:
    """Defaults, then the settings file, then LOUPE_* environment variables, then keyword overrides."""
    from core import setting_rules

    names = {f.name for f in fields(Settings)}
    values: dict[str, tuple[object, str]] = {}  # name -> (raw value, where it came from)
    path = config_path()
    if path is not None:
        values.update({k: (v, str(path)) for k, v in _read_file(path, names).items()})
    for name in sorted(names):
        env = os.environ.get(f"LOUPE_{name.upper()}")
        if env is not None:
            values[name] = (env, f"LOUPE_{name.upper()}")
    values.update({k: (v, "the command") for k, v in overrides.items() if v is not None})
    checked: dict[str, Any] = {name: setting_rules.check(name, raw, origin) for name, (raw, origin) in values.items()}
    settings = Settings(**checked)
    return setting_rules.check_together(settings)
