from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mockserver.catalog import Catalog
from mockserver.errors import ConfigError
from mockserver.settings import load_settings


def test_layers_override_in_order(tmp_path):
    config = tmp_path / "m.toml"
    config.write_text('port = 9000\nseed = 3\nstorage = "memory://"\n[timing]\ntime_scale = 5\n')
    settings = load_settings(
        config_file=config,
        environ={"MOCKSERVER_SEED": "4", "MOCKSERVER_TIMING__TIME_SCALE": "7", "HOME": "/x"},
        overrides={"seed": 5},
    )
    assert settings.port == 9000  # file
    assert settings.timing.time_scale == 7  # env beats file
    assert settings.seed == 5  # CLI beats env
    assert settings.timing.min_event_interval == 0.01  # default survives a partial table


def test_settings_are_frozen():
    settings = load_settings(environ={})
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its own ValidationError subclass
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            {"environ": {"MOCKSERVER_TIMING__TIME_SCALE": "fast"}},
            "'timing.time_scale' from environment variable MOCKSERVER_TIMING__TIME_SCALE",
        ),
        (
            {"environ": {"MOCKSERVER_NOPE": "1"}},
            "'nope' from environment variable MOCKSERVER_NOPE: unknown setting",
        ),
        ({"environ": {}, "overrides": {"port": 70000}}, "'port' from command line"),
    ],
)
def test_errors_name_the_key_and_the_layer(source, expected):
    with pytest.raises(ConfigError) as caught:
        load_settings(**source)
    assert expected in str(caught.value)


def test_error_in_config_file_names_the_file(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[timing]\nspeedy = true\n")
    with pytest.raises(ConfigError, match=r"'timing.speedy' from config file .*bad.toml: unknown setting"):
        load_settings(config_file=config, environ={})


def test_models_extend_and_replace(tmp_path):
    config = tmp_path / "m.toml"
    config.write_text(
        '[[models]]\nid = "claude-opus-4-8"\ndisplay_name = "Claude Opus 4.8"\n'
        'speeds = ["standard", "fast"]\n'
        "speed_requires_beta = true\n"
    )
    extended = Catalog.from_settings(load_settings(config_file=config, environ={}))
    assert "fast" in extended.resolve("claude-opus-4-8").speeds
    assert extended.resolve("claude-opus-4-7") is not None
    replaced = Catalog.from_settings(
        load_settings(config_file=config, environ={"MOCKSERVER_MODELS_MODE": "replace"})
    )
    assert replaced.resolve("claude-opus-4-7") is None and len(replaced) == 1


def test_default_catalog_follows_the_seed():
    catalog = Catalog.from_settings(load_settings(environ={}))
    fast = {m.id for m in catalog.newest_first() if "fast" in m.speeds}
    assert fast == {"claude-opus-4-7", "claude-opus-4-6"}
    assert all(catalog.resolve(m).speed_requires_beta for m in fast)


def test_cli_reports_bad_settings_and_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "mockserver", "serve", "--port", "0", "--storage", "ftp://x"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "'storage' from command line" in result.stderr


def test_cli_prints_its_url_and_serves(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "mockserver", "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        assert line.startswith("mockserver listening on http://127.0.0.1:")
        url = line.split()[-1]
        import httpx

        assert (
            httpx.get(
                f"{url}/v1/models", headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}
            ).status_code
            == 200
        )
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_example_config_loads():
    settings = load_settings(config_file="fixtures/mockserver.example.toml", environ={})
    assert settings.replies == (str(Path("fixtures/replies").absolute()),)
    assert Path(settings.replies[0]).is_dir()


def test_paths_in_a_config_file_are_relative_to_its_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "conf" / "m.toml"
    config.parent.mkdir()
    config.write_text('replies = ["canned", "../shared/a.toml", "/abs/b.toml", "~/c.toml"]\n')
    monkeypatch.chdir(tmp_path / "conf")  # a relative config path: resolved all the same
    settings = load_settings(config_file="m.toml", environ={})
    assert settings.replies == (
        str(tmp_path / "conf" / "canned"),
        str(tmp_path / "conf" / ".." / "shared" / "a.toml"),
        "/abs/b.toml",
        str(tmp_path / "home" / "c.toml"),
    )
    # Paths from the environment stay relative to the working directory, as any path given there.
    from_env = load_settings(environ={"MOCKSERVER_REPLIES": '["canned"]'})
    assert from_env.replies == ("canned",)


def test_a_paths_setting_of_the_wrong_shape_is_left_to_validation(tmp_path):
    config = tmp_path / "m.toml"
    config.write_text('replies = "canned"\n')
    with pytest.raises(ConfigError, match=r"setting 'replies' from config file .*m.toml"):
        load_settings(config_file=config, environ={})


def test_config_file_from_the_environment(tmp_path):
    config = tmp_path / "env.toml"
    config.write_text("[timing]\nwarp = 9\n")

    def serve(path: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "MOCKSERVER_CONFIG_FILE": path}
        command = [sys.executable, "-m", "mockserver", "serve", "--port", "0"]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)

    read = serve(str(config))
    assert read.returncode == 2 and f"'timing.warp' from config file {config}" in read.stderr
    missing = serve("/nope.toml")
    assert missing.returncode == 2 and "config file /nope.toml does not exist" in missing.stderr


def test_example_config_mentions_every_setting():
    from mockserver.settings import Settings

    text = Path("fixtures/mockserver.example.toml").read_text()
    for name, field in Settings.model_fields.items():
        assert name in text, f"fixtures/mockserver.example.toml does not show {name!r}"
        section = getattr(field.annotation, "model_fields", {})
        for key in section:
            assert key in text, f"fixtures/mockserver.example.toml does not show {name}.{key}"


@pytest.mark.parametrize("value", ["123456", "true", "null", "[1]", "1.5"])
def test_text_settings_from_the_environment_are_taken_as_written(value):
    settings = load_settings(environ={"MOCKSERVER_ADMIN__TOKEN": value, "MOCKSERVER_KEY_PREFIX": value})
    assert settings.admin.token == value and settings.key_prefix == value


def test_other_settings_from_the_environment_are_json():
    settings = load_settings(
        environ={
            "MOCKSERVER_API_KEYS": '["a","b"]',
            "MOCKSERVER_SEED": "7",
            "MOCKSERVER_JOURNAL__ENABLED": "false",
            "MOCKSERVER_ORGANIZATIONS__TEAM__KEYS": '["k"]',
            "MOCKSERVER_ORGANIZATIONS__TEAM__FAST_MODE": "false",
            "MOCKSERVER_LOG__FORMAT": "json",  # a Literal of strings: as written, as before
        }
    )
    assert settings.api_keys == ("a", "b") and settings.seed == 7 and settings.journal.enabled is False
    assert settings.organizations["team"].keys == ("k",) and settings.organizations["team"].fast_mode is False
    assert settings.log.format == "json"


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_admin_token_is_no_token(tmp_path, blank):
    config = tmp_path / "m.toml"
    config.write_text(f'host = "0.0.0.0"\n[admin]\ntoken = "{blank}"\n')
    for source in (
        {"config_file": config, "environ": {}},
        {"environ": {"MOCKSERVER_HOST": "0.0.0.0", "MOCKSERVER_ADMIN__TOKEN": blank}},
    ):
        with pytest.raises(ConfigError, match=r"admin API needs a token.*blank"):
            load_settings(**source)
    assert load_settings(environ={"MOCKSERVER_ADMIN__TOKEN": blank}).admin.token is None


def test_cli_refuses_to_listen_beyond_loopback_with_an_empty_admin_token():
    env = {"PATH": "/usr/bin:/bin", "MOCKSERVER_ADMIN__TOKEN": ""}
    command = [sys.executable, "-m", "mockserver", "serve", "--host", "0.0.0.0", "--port", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 2 and "admin API needs a token" in result.stderr


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
def test_settings_numbers_are_finite(value):
    # `inf` cannot be written as JSON for worker processes or the admin API, and no duration or price
    # is infinite on purpose.
    with pytest.raises(ConfigError, match=r"setting 'timing.time_scale' from environment variable .*finite"):
        load_settings(environ={"MOCKSERVER_TIMING__TIME_SCALE": value})
    with pytest.raises(ConfigError, match=r"setting 'pricing.fast_multiplier' .*finite"):
        load_settings(overrides={"pricing": {"fast_multiplier": float(value)}})


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("MOCKSERVER_TIMEING__TIME_SCALE", "'timeing'"),
        ("MOCKSERVER_TIMING__TIME_SCALEE", "'timing.time_scalee'"),
    ],
)
def test_a_misspelled_environment_variable_is_named(name, where):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={name: "3"})
    assert f"setting {where} from environment variable {name}: unknown setting" in str(caught.value)


# Finite but absurd values were accepted, and every reply then waited for ever (a TTFT of 1e308 s,
# 1e-300 tokens a second, a time_scale of 1e-300, a jitter width of 1e300), or a price overflowed a
# reply's cost to inf (stored as null in the usage ledger, which then answered 500).
OUT_OF_BOUNDS = [
    ("timing.time_scale", 1e-300),
    ("timing.time_scale", 0.0009),
    ("timing.time_scale", 1_000_001),
    ("timing.ttft_jitter_width", 1e300),
    ("timing.ttft_jitter_width", 10.5),
    ("timing.min_event_interval", 3_601),
    ("timing.ping_interval", 1e300),
    ("pricing.fast_multiplier", 1e308),
    ("pricing.batch_multiplier", 1_001),
    ("pricing.cache_write_5m_multiplier", 1e300),
    ("pricing.cache_write_1h_multiplier", 1e300),
    ("pricing.cache_read_multiplier", 1e300),
    ("pricing.models.opus.input_per_mtok", 1e308),
    ("pricing.models.opus.output_per_mtok", 1_000_001),
    ("batches.processing_seconds", 1e308),
    ("batches.cancel_seconds", 1e308),
]


def _nested(dotted: str, value: object) -> dict[str, object]:
    *tables, key = dotted.split(".")
    data: dict[str, object] = {key: value}
    for table in reversed(tables):
        data = {table: data}
    return data


@pytest.mark.parametrize(("name", "value"), OUT_OF_BOUNDS)
def test_settings_out_of_bounds_are_refused_naming_the_setting_and_the_layer(name, value):
    if name.startswith("pricing.models.opus."):  # a price row needs both rates
        row = {"input_per_mtok": 5.0, "output_per_mtok": 25.0, name.rsplit(".", 1)[1]: value}
        overrides = _nested("pricing.models.opus", row)
    else:
        overrides = _nested(name, value)
    with pytest.raises(ConfigError, match=rf"setting '{name}' from command line: Input should be"):
        load_settings(environ={}, overrides=overrides)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("ttft_seconds", 1e308, "less than or equal to 3600"),
        ("output_tokens_per_second", 1e-300, "greater than or equal to 0.1"),
        ("output_tokens_per_second", 1e300, "less than or equal to 1000000"),
        ("fast_multiplier", 1e-300, "greater than or equal to 1"),
        ("fast_multiplier", 101, "less than or equal to 100"),
    ],
)
def test_a_model_row_out_of_bounds_is_refused_naming_the_row(tmp_path, key, value, words):
    config = tmp_path / "m.toml"
    config.write_text(f'[[models]]\nid = "slow"\ndisplay_name = "Slow"\n{key} = {value!r}\n')
    with pytest.raises(ConfigError, match=rf"setting 'models.0.{key}' from config file {config}: .*{words}"):
        load_settings(config_file=config, environ={})


def test_time_scale_out_of_bounds_from_the_environment_names_the_variable():
    with pytest.raises(
        ConfigError, match=r"'timing.time_scale' from environment variable MOCKSERVER_TIMING__"
    ):
        load_settings(environ={"MOCKSERVER_TIMING__TIME_SCALE": "1e-300"})


def test_settings_at_their_bounds_are_accepted():
    timing = {
        "time_scale": 0.001,
        "ttft_jitter_width": 10,
        "min_event_interval": 3_600,
        "ping_interval": 3_600,
    }
    row = {"id": "edge", "display_name": "Edge", "ttft_seconds": 3_600, "output_tokens_per_second": 0.1}
    price = {"input_per_mtok": 1e6, "output_per_mtok": 1e6}
    pricing = {"models": {"opus": price}, "fast_multiplier": 1_000}
    settings = load_settings(environ={}, overrides={"timing": timing, "models": [row], "pricing": pricing})
    assert settings.timing.time_scale == 0.001 and settings.pricing.models["opus"].output_per_mtok == 1e6
    assert load_settings(environ={}, overrides={"timing": {"time_scale": 1e6}}).timing.time_scale == 1e6


def test_a_jittered_ttft_stays_within_the_longest_a_row_may_set():
    from mockserver.pacing import jittered
    from mockserver.settings import MAX_WAIT_SECONDS

    draws = [jittered(3_600.0, "normal", 10.0, seed) for seed in range(200)]
    assert max(draws) == MAX_WAIT_SECONDS and min(draws) >= 0.0
