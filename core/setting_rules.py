"""What each setting accepts, checked once on load (core/settings.py says the rules in prose).

Each rule takes the raw value as it came (a TOML value, an environment string, or a keyword override from
the command) and returns the typed value, or raises one ConfigError naming the key, where the value came
from, the value, and what is allowed. Nothing is coerced silently: `true` is not 1 and 12.9 is not 12.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ConfigError

if TYPE_CHECKING:
    from core.settings import Settings

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _show(raw: object) -> str:
    """The value as the analyst wrote it: TOML spells booleans in lower case."""
    return str(raw).lower() if isinstance(raw, bool) else repr(raw)


def _refuse(name: str, raw: object, origin: str, allowed: str) -> ConfigError:
    return ConfigError(f"setting '{name}' (from {origin}) is {_show(raw)}; {allowed}")


def _whole_at_least(minimum: int) -> Callable[[str, object, str], int]:
    def rule(name: str, raw: object, origin: str) -> int:
        allowed = f"it must be a whole number of at least {minimum}"
        value: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):  # bool is an int subclass: true must not become 1
            value = raw
        elif isinstance(raw, float) and raw.is_integer():
            value = int(raw)
        elif isinstance(raw, str) and re.fullmatch(r"\s*\+?\d+\s*", raw):
            value = int(raw)
        if value is None or value < minimum:
            raise _refuse(name, raw, origin, allowed)
        return value
    return rule


_whole = _whole_at_least(1)


def _port(name: str, raw: object, origin: str) -> int:
    """0 (off) or a TCP port."""
    text = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if not re.fullmatch(r"\+?\d+", text) or int(text) > 65535:
        raise _refuse(name, raw, origin, "it must be 0 (off) or a port number from 1 to 65535")
    return int(text)


def _seconds(name: str, raw: object, origin: str) -> float:
    allowed = "it must be a number of seconds above 0"
    value: float | None = None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise _refuse(name, raw, origin, allowed)
    return value


def _flag(name: str, raw: object, origin: str) -> bool:
    if isinstance(raw, bool):
        return raw
    text = raw.strip().lower() if isinstance(raw, str) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _refuse(name, raw, origin, "it must be true or false (from the environment: true/false/1/0)")


def _text(name: str, raw: object, origin: str) -> str:
    if not isinstance(raw, str):
        raise _refuse(name, raw, origin, "it must be a string (in quotes in loupe.toml)")
    return raw


def _choice(*allowed: str) -> Callable[[str, object, str], str]:
    def rule(name: str, raw: object, origin: str) -> str:
        text = raw.strip().lower() if isinstance(raw, str) else None
        if text not in allowed:
            raise _refuse(name, raw, origin, f"allowed: {', '.join(allowed)}")
        return text
    return rule


def _home(name: str, raw: object, origin: str) -> Path:
    if isinstance(raw, Path):
        return raw.expanduser()
    if not _text(name, raw, origin).strip():
        raise _refuse(name, raw, origin, "it must name a folder")
    return Path(str(raw)).expanduser()


def _url(name: str, raw: object, origin: str) -> str:
    text = _text(name, raw, origin).strip()
    if text and not re.match(r"https?://[^\s/]+", text):
        raise _refuse(name, raw, origin, "it must be an http(s) URL like http://127.0.0.1:23333/v1, or empty")
    return text


def _memory(name: str, raw: object, origin: str) -> str:
    """A number, a list of numbers, or '22.2,22.2' → the comma-separated string the shard planner reads."""
    allowed = "it must be GB per GPU: a number, a list like [22.2, 22.2], or a string like \"22.2,22.2\""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        text = str(raw)
    elif isinstance(raw, list) and raw and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
        text = ",".join(str(v) for v in raw)
    elif isinstance(raw, str):
        text = raw.strip()
    else:
        raise _refuse(name, raw, origin, allowed)
    if text:
        try:
            parse_memory(text, setting=name)
        except ConfigError as exc:
            raise _refuse(name, raw, origin, f"{allowed} ({exc})") from None
    return text


def _split(name: str, raw: object, origin: str) -> str:
    """'0-15,16-31' or ["0-15", "16-31"]: its form is checked now, the layer count once the model is known."""
    allowed = "it must be layer ranges per GPU, GPU0 first, like \"0-15,16-31\" or [\"0-15\", \"16-31\"]"
    if isinstance(raw, list) and raw and all(isinstance(v, str) for v in raw):
        text = ",".join(v.strip() for v in raw)
    elif isinstance(raw, str):
        text = raw.strip()
    else:
        raise _refuse(name, raw, origin, allowed)
    if text:
        last = text.rsplit("-", 1)[-1].strip()
        try:  # the ranges must run from layer 0 to their own last layer with no gap or overlap
            parse_split(text, int(last) + 1 if last.isdigit() else 1)
        except ConfigError as exc:
            raise _refuse(name, raw, origin, f"{allowed} ({exc})") from None
    return text


def _folders(name: str, raw: object, origin: str) -> str:
    """A TOML list of folders, or one string split on commas and os.pathsep → the comma-separated string."""
    allowed = f"it must be a list of folders, or one string of folders separated by ',' or {os.pathsep!r}"
    if isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        if any("," in v for v in raw):  # the kept form is comma-separated, so a comma would split the folder
            raise _refuse(name, raw, origin, f"{allowed}; a folder name may not contain ','")
        items = [v.strip() for v in raw]
    elif isinstance(raw, str):
        items = [v.strip() for v in re.split(f"[,{re.escape(os.pathsep)}]", raw)]
    else:
        raise _refuse(name, raw, origin, allowed)
    return ",".join(v for v in items if v)


def _time_zone(name: str, raw: object, origin: str) -> str:
    """'auto' or an IANA time zone name this machine knows (Asia/Shanghai, Europe/Berlin, UTC)."""
    text = _text(name, raw, origin).strip()
    if text.lower() == "auto":
        return "auto"
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _refuse(name, raw, origin, "it must be auto (the browser's time zone) or a time zone name "
                                         "such as Asia/Shanghai or UTC") from None
    return text


RULES: dict[str, Callable[[str, object, str], object]] = {
    "home": _home, "model": _text, "backend": _choice("auto", "transformers", "xcomposer", "openai"),
    "trust_remote_code": _flag, "device": _choice("auto", "cpu", "cuda"), "max_width": _whole,
    "max_pixels": _whole, "max_images": _whole, "max_question_chars": _whole,
    "api_max_question_chars": _whole, "max_new_tokens": _whole,
    "stream_timeout_s": _seconds, "fast_decode": _flag, "fast_decode_rows": _whole,
    "decode_attention": _choice("auto", "sdpa", "flex", "split"), "history_db": _text, "max_memory_gb": _memory,
    "split": _split, "openai_base_url": _url, "openai_api_key": _text, "remote_max_in_flight": _whole,
    "remote_model": _text, "remote_image_format": _choice("jpeg", "png"), "remote_max_retries": _whole_at_least(0),
    "api_token": _text,
    "dashboard_password": _text,
    "api_allowed_paths": _folders, "sample_interval_s": _seconds, "sample_window_s": _seconds,
    "batch_max_files": _whole, "batch_max_mb": _whole, "metrics_port": _port, "metrics_address": _text,
    "interface_language": _choice("auto", "zh", "en"), "time_zone": _time_zone,
}


def check(name: str, raw: object, origin: str) -> object:
    return RULES[name](name, raw, origin)


def check_together(settings: Settings) -> Settings:
    """The rules that involve more than one field or the disk; returns the settings with home resolved."""
    if settings.sample_window_s < settings.sample_interval_s:
        raise ConfigError(f"setting 'sample_window_s' ({settings.sample_window_s}) must be at least "
                          f"sample_interval_s ({settings.sample_interval_s})")
    home = settings.home.resolve()
    if home.exists() and not home.is_dir():
        raise ConfigError(f"setting 'home' is {str(home)!r}, which is a file; it must be a folder")
    settings = dataclasses.replace(settings, home=home)
    _check_history(settings.history_path, settings.history_db)
    return settings


def _check_history(path: Path, history_db: str) -> None:
    """Refused here, not when the history store first opens: a bad path would otherwise be an sqlite
    traceback in the middle of a page or a request. The store creates missing folders itself."""
    key = f"setting 'history_db' is {history_db!r}" if history_db else \
        f"the history database {str(path)!r} (setting 'history_db' is empty, so it lives in 'home')"
    if path.is_dir():
        raise ConfigError(f"{key}: that is a folder; it must be a database file (it is created if missing)")
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise ConfigError(f"{key}: it cannot be created, because {str(above)!r} is a file, not a folder")
    target = path if path.exists() else above
    if not os.access(target, os.W_OK):
        raise ConfigError(f"{key}: {str(target)!r} is not writable by this user")


# -- the shard planner's settings: caps and pinned splits (read by core/models/planner.py) -----------
def parse_memory(text: str, *, setting: str = "max_memory_gb") -> tuple[float, ...]:
    """'22.2,22.2' → (22.2, 22.2) GB usable per GPU, GPU0 first."""
    values = []
    for piece in [p.strip() for p in text.split(",")]:
        try:
            value = float(piece)
        except ValueError:
            raise ConfigError(f"{setting} should be GB per GPU separated by commas, like 22.2,22.2; got {text!r}") from None
        if not 0 < value < 10_000:
            raise ConfigError(f"{setting}: {piece} GB is not a usable amount of GPU memory")
        values.append(value)
    return tuple(values)


def parse_split(text: str, num_layers: int) -> tuple[tuple[int, int], ...]:
    """'0-15,16-31' → ((0, 15), (16, 31)); every layer exactly once, in order, GPU0 first."""
    ranges = []
    for gpu, piece in enumerate(p.strip() for p in text.split(",")):
        bounds = piece.split("-")
        try:
            first, last = (int(bounds[0]), int(bounds[-1])) if len(bounds) in (1, 2) else (-1, -1)
        except ValueError:
            first, last = -1, -1
        if first < 0 or last < first:
            raise ConfigError(f"split: '{piece}' (GPU{gpu}) is not a layer range like 0-15")
        ranges.append((first, last))
    expected = 0
    for gpu, (first, last) in enumerate(ranges):
        if first < expected:
            raise ConfigError(f"split: layers {first}-{min(last, expected - 1)} are placed twice "
                              f"(GPU{gpu} overlaps GPU{gpu - 1})")
        if first > expected:
            missing = f"{expected}-{first - 1}" if first - 1 > expected else str(expected)
            raise ConfigError(f"split: layer {missing} is on no GPU (before GPU{gpu}'s {first}-{last})")
        expected = last + 1
    if expected != num_layers:
        if expected > num_layers:
            raise ConfigError(f"split names layer {expected - 1}, but the model has {num_layers} layers (0-{num_layers - 1})")
        raise ConfigError(f"split leaves layers {expected}-{num_layers - 1} on no GPU (the model has {num_layers} layers)")
    return tuple(ranges)
