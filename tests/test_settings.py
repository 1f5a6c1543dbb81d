"""Settings: defaults < loupe.toml < LOUPE_* environment < explicit overrides; bad values are typed errors."""
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core import setting_rules
from core.errors import ConfigError
from core.settings import load_settings


def test_defaults(loupe_home: Path) -> None:
    s = load_settings()
    assert s.home == loupe_home.resolve()
    assert (s.max_width, s.max_question_chars, s.max_new_tokens, s.max_images) == (1280, 200, 1024, 4)
    assert s.model == "" and s.trust_remote_code is False
    assert s.history_path == loupe_home.resolve() / "history.sqlite3"


def test_interface_language_and_time_zone_default_to_the_browser_and_take_a_choice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (load_settings().interface_language, load_settings().time_zone) == ("auto", "auto")
    _file(tmp_path, monkeypatch, 'interface_language = "ZH"\ntime_zone = "Asia/Shanghai"')
    assert (load_settings().interface_language, load_settings().time_zone) == ("zh", "Asia/Shanghai")
    monkeypatch.setenv("LOUPE_TIME_ZONE", "Auto")
    assert load_settings().time_zone == "auto"


def test_file_then_env_then_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "loupe.toml"
    config.write_text('model = "/models/a"\nmax_width = 1024\ntrust_remote_code = true\n', encoding="utf-8")
    monkeypatch.setenv("LOUPE_CONFIG", str(config))
    s = load_settings()
    assert (s.model, s.max_width, s.trust_remote_code) == ("/models/a", 1024, True)
    monkeypatch.setenv("LOUPE_MAX_WIDTH", "800")
    assert load_settings().max_width == 800
    assert load_settings(max_width=640).max_width == 640


@pytest.mark.parametrize(
    ("text", "phrase"),
    [("max_width = ", "not valid TOML"), ("colour = 'red'", "unknown setting"), ("max_width = 'wide'", "whole number"),
     ("max_width = 0", "at least 1")],
)
def test_bad_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, phrase: str) -> None:
    config = tmp_path / "loupe.toml"
    config.write_text(text, encoding="utf-8")
    monkeypatch.setenv("LOUPE_CONFIG", str(config))
    with pytest.raises(ConfigError, match=phrase):
        load_settings()


def test_bad_env_boolean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_TRUST_REMOTE_CODE", "perhaps")
    with pytest.raises(ConfigError, match="trust_remote_code"):
        load_settings()


# -- issue 16 item 7: every value is typed and checked on load; one ConfigError names key, value, what is allowed
def _file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    config = tmp_path / "settings.toml"
    config.write_text(text, encoding="utf-8")
    monkeypatch.setenv("LOUPE_CONFIG", str(config))
    return config


@pytest.mark.parametrize(
    ("text", "phrases"),
    [("stream_timeout_s = -1", ("'stream_timeout_s'", "-1", "above 0")),
     ("stream_timeout_s = nan", ("'stream_timeout_s'", "nan", "above 0")),
     ("max_width = true", ("'max_width'", "true", "whole number")),
     ("max_width = 12.9", ("'max_width'", "12.9", "whole number")),
     ("max_images = 0", ("'max_images'", "at least 1")),
     ("batch_max_mb = -5", ("'batch_max_mb'", "-5", "at least 1")),
     ('device = "tpu"', ("'device'", "'tpu'", "auto, cpu, cuda")),
     ('backend = "vllm"', ("'backend'", "'vllm'", "auto, transformers, xcomposer, openai")),
     ('fast_decode = "maybe"', ("'fast_decode'", "'maybe'", "true or false")),
     ("trust_remote_code = 1", ("'trust_remote_code'", "true or false")),
     ("model = 5", ("'model'", "5", "string")),
     ('openai_base_url = "127.0.0.1:8000"', ("'openai_base_url'", "http(s) URL")),
     ('max_memory_gb = [22.2, "lots"]', ("'max_memory_gb'", "'lots'", "GB per GPU")),
     ("max_memory_gb = [-1]", ("'max_memory_gb'", "-1", "not a usable amount")),
     ("max_memory_gb = true", ("'max_memory_gb'", "true", "GB per GPU")),
     ('split = "0-15,15-31"', ("'split'", "placed twice")),
     ('split = "0-15,17-31"', ("'split'", "on no GPU")),
     ("api_allowed_paths = [1, 2]", ("'api_allowed_paths'", "list of folders")),
     ('api_allowed_paths = ["/a,b"]', ("'api_allowed_paths'", "may not contain ','")),
     ("sample_interval_s = 5.0\nsample_window_s = 1.0", ("'sample_window_s'", "sample_interval_s")),
     ('interface_language = "fr"', ("'interface_language'", "'fr'", "auto, zh, en")),
     ('time_zone = "Mars/Olympus"', ("'time_zone'", "'Mars/Olympus'", "Asia/Shanghai")),
     ("time_zone = 8", ("'time_zone'", "8", "string")),
     ])
def test_wrong_values_are_refused_with_key_value_and_what_is_allowed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, phrases: tuple[str, ...]) -> None:
    config = _file(tmp_path, monkeypatch, text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert all(p in message for p in phrases), message
    if "sample_window_s" not in text:
        assert str(config) in message  # where the value came from


@pytest.mark.parametrize(
    ("name", "value", "phrase"),
    [("LOUPE_MAX_WIDTH", "12.9", "whole number"), ("LOUPE_MAX_WIDTH", "true", "whole number"),
     ("LOUPE_STREAM_TIMEOUT_S", "-1", "above 0"), ("LOUPE_STREAM_TIMEOUT_S", "inf", "above 0"),
     ("LOUPE_DEVICE", "tpu", "auto, cpu, cuda"), ("LOUPE_FAST_DECODE", "perhaps", "true or false"),
     ("LOUPE_MAX_MEMORY_GB", "22.2,x", "GB per GPU")])
def test_wrong_environment_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                   phrase: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=phrase) as caught:
        load_settings()
    assert f"from {name})" in str(caught.value) and repr(value) in str(caught.value)


def test_environment_strings_are_parsed_to_the_field_type(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw, expected in (("true", True), ("1", True), ("false", False), ("0", False), ("FALSE", False)):
        monkeypatch.setenv("LOUPE_FAST_DECODE", raw)
        assert load_settings().fast_decode is expected
    monkeypatch.setenv("LOUPE_STREAM_TIMEOUT_S", "2.5")
    monkeypatch.setenv("LOUPE_MAX_IMAGES", " 3 ")
    monkeypatch.setenv("LOUPE_DEVICE", "CPU")
    s = load_settings()
    assert (s.stream_timeout_s, s.max_images, s.device) == (2.5, 3, "cpu")


def test_whole_numbers_and_seconds_accept_their_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _file(tmp_path, monkeypatch, "max_width = 1024.0\nstream_timeout_s = 30\nbatch_max_files = 7\n")
    s = load_settings()
    assert (s.max_width, s.stream_timeout_s, s.batch_max_files) == (1024, 30.0, 7)
    assert type(s.max_width) is int and type(s.stream_timeout_s) is float


@pytest.mark.parametrize("text", ["max_memory_gb = [22.2, 22.2]", 'max_memory_gb = "22.2, 22.2"'])
def test_max_memory_gb_takes_a_list_or_a_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:

    _file(tmp_path, monkeypatch, text)
    s = load_settings()
    assert setting_rules.parse_memory(s.max_memory_gb) == (22.2, 22.2)


def test_one_number_caps_every_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _file(tmp_path, monkeypatch, "max_memory_gb = 40")
    assert load_settings().max_memory_gb == "40"


def test_split_takes_a_list_or_a_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _file(tmp_path, monkeypatch, 'split = ["0-15", "16-31"]')
    assert load_settings().split == "0-15,16-31"


@pytest.mark.parametrize("form", ["list", "commas", "pathsep"])
def test_api_allowed_paths_takes_a_list_or_a_separated_string(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    import os

    from core.serving.chat_request import allowed_roots

    first, second = tmp_path / "images a", tmp_path / "images b"
    text = {"list": f"api_allowed_paths = ['{first}', '{second}']",
            "commas": f"api_allowed_paths = '{first}, {second}'",
            "pathsep": f"api_allowed_paths = '{first}{os.pathsep}{second}'"}[form]
    _file(tmp_path, monkeypatch, text)
    assert allowed_roots(load_settings().api_allowed_paths) == (first.resolve(), second.resolve())


def test_loupe_config_must_name_an_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_CONFIG", str(tmp_path / "typo.toml"))
    with pytest.raises(ConfigError, match="LOUPE_CONFIG .*typo.toml.*no file there"):
        load_settings()
    monkeypatch.setenv("LOUPE_CONFIG", str(tmp_path))
    with pytest.raises(ConfigError, match="is a folder"):
        load_settings()
    monkeypatch.setenv("LOUPE_CONFIG", "")  # set empty on purpose: no settings file, the defaults apply
    assert load_settings().max_width == 1280


def test_loupe_toml_in_the_working_folder_is_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOUPE_CONFIG")
    monkeypatch.chdir(tmp_path)
    assert load_settings().max_width == 1280
    (tmp_path / "loupe.toml").write_text("max_width = 99", encoding="utf-8")
    assert load_settings().max_width == 99


def test_unusable_history_db_is_refused_on_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    monkeypatch.setenv("LOUPE_HISTORY_DB", str(folder))
    with pytest.raises(ConfigError, match="'history_db'.*a-folder.*is a folder"):
        load_settings()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    monkeypatch.setenv("LOUPE_HISTORY_DB", str(a_file / "sub" / "history.sqlite3"))
    with pytest.raises(ConfigError, match="'history_db'.*cannot be created.*a-file.*is a file"):
        load_settings()
    monkeypatch.setenv("LOUPE_HISTORY_DB", str(tmp_path / "new" / "deeper" / "h.sqlite3"))
    assert load_settings().history_path == tmp_path / "new" / "deeper" / "h.sqlite3"  # created by the store later


def test_default_history_path_names_home_when_unusable(loupe_home: Path) -> None:
    (loupe_home / "history.sqlite3").mkdir()
    with pytest.raises(ConfigError, match="history_db' is empty.*'home'"):
        load_settings()


def _core(*args: str) -> "subprocess.CompletedProcess[str]":
    root = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=root, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("variable", "value", "key"),
                         [("LOUPE_STREAM_TIMEOUT_S", "-1", "stream_timeout_s"), ("LOUPE_DEVICE", "tpu", "device"),
                          ("LOUPE_MAX_MEMORY_GB", "[22.2, 22.2]", "max_memory_gb")])
def test_cli_refuses_a_bad_setting_with_one_error_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_model_dir: Path, variable: str, value: str,
        key: str) -> None:
    image = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(image)
    monkeypatch.setenv(variable, value)
    for args in (("plan", str(demo_model_dir)), ("ask", str(image), "hi")):
        result = _core(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1 and lines[0].startswith("error:") and f"'{key}'" in lines[0], result.stderr


def test_cli_refuses_a_missing_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             demo_model_dir: Path) -> None:
    monkeypatch.setenv("LOUPE_CONFIG", str(tmp_path / "missing.toml"))
    result = _core("plan", str(demo_model_dir))
    assert result.returncode == 2 and result.stderr.startswith("error: LOUPE_CONFIG"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
