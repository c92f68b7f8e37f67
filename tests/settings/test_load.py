"""Loading and validating settings: pure unit tests, no database."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from pipeline.mapping import FieldType
from pipeline.secret import Secret
from pipeline.settings import (
    DEFAULT_MAPPING,
    ConfigError,
    Settings,
    SyncMode,
    check_settings,
    crontab_problem,
    describe_settings,
    load_settings,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "ordersync.example.toml"

MAPPING = """
[[mapping]]
column = "id"
api_name = "parent_id"
type = "text"

[[mapping]]
column = "order_number"
api_name = "Name"
type = "text"
max_length = 120
mandatory = true

[[mapping]]
column = "status"
api_name = "Order_Status"
type = "picklist"
allowed = ["New", "Paid"]
"""


def write(tmp_path: Path, text: str, name: str = "ordersync.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_and_no_environment_gives_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(env={}) == Settings()
    assert load_settings(env={}).mapping == DEFAULT_MAPPING


def test_the_example_file_loads_and_matches_the_demo_mapping() -> None:
    settings = load_settings(EXAMPLE, env={})
    assert settings.mapping == DEFAULT_MAPPING
    assert settings.zoho.accounts_url == "http://127.0.0.1:8010"
    assert settings.zoho.client_secret == Secret("zohosim-secret")
    assert settings.zoho.refresh_token.reveal() == "1000.zohosim.refresh"
    assert settings.source.dsn.reveal().endswith("/ordersync_demo")
    assert check_settings(settings) == []


def test_file_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "[sync]\nbatch_size = 11\n")
    named = write(tmp_path, "[sync]\nbatch_size = 22\n", "named.toml")
    explicit = write(tmp_path, "[sync]\nbatch_size = 33\n", "explicit.toml")
    assert load_settings(env={}).batch_size == 11  # ./ordersync.toml
    assert load_settings(env={"ORDERSYNC_CONFIG": str(named)}).batch_size == 22
    assert load_settings(explicit, env={"ORDERSYNC_CONFIG": str(named)}).batch_size == 33


def test_a_named_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"ORDERSYNC_CONFIG": str(tmp_path / "nope.toml")})
    assert caught.value.key == "config"
    assert "nope.toml" in str(caught.value)


def test_invalid_toml_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "[sync\nbatch_size = 1\n"), env={})
    assert caught.value.key == "config"
    assert "not valid TOML" in caught.value.message


def test_toml_values_and_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[source]\ntable = "legacy_orders"\n'
        '[zoho]\ndata_centre = "eu"\nconnect_timeout = 3\nignore_empty = true\n'
        '[sync]\nbatch_size = 500\nmode = "interval"\nwork_dir = "/tmp/x"\n'
        'org_timezone = "Europe/Berlin"\nrealtime_max_delay = 60\n' + MAPPING,
    )
    settings = load_settings(path, env={})
    assert settings.source.table == "legacy_orders"
    assert settings.zoho.data_centre == "eu"
    assert settings.zoho.connect_timeout == 3.0 and isinstance(settings.zoho.connect_timeout, float)
    assert settings.zoho.ignore_empty is True
    assert settings.batch_size == 500
    assert settings.mode is SyncMode.INTERVAL
    assert settings.work_dir == Path("/tmp/x")
    assert settings.realtime_max_delay == 60.0
    # one time zone, written once, seen by both halves
    assert settings.org_timezone == settings.zoho.org_timezone == "Europe/Berlin"
    assert settings.mapping.columns == ("id", "order_number", "status")
    status = settings.mapping.fields[2]
    assert status.type is FieldType.PICKLIST and status.allowed == ("New", "Paid")
    assert settings.mapping.fields[1].max_length == 120 and settings.mapping.fields[1].mandatory
    assert settings.mapping.key_column == "id" and settings.mapping.unique_field == "parent_id"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[sync]\nbatch_size = 500\n[zoho]\naccounts_url = "http://a:1"\n')
    env = {
        "ORDERSYNC_SYNC_BATCH_SIZE": "2_000",
        "ORDERSYNC_SYNC_REALTIME_CHECK": "2.5",
        "ORDERSYNC_SYNC_MODE": "realtime",
        "ORDERSYNC_ZOHO_IGNORE_EMPTY": "yes",
        "ORDERSYNC_ZOHO_ACCOUNTS_URL": "",  # empty optional → unset
        "ORDERSYNC_ZOHO_CLIENT_SECRET": "from-env",
        "ORDERSYNC_SOURCE_DSN": "postgresql://u:pw@db/x",
        "ORDERSYNC_SOURCE_KEY_COLUMN": "id",
        "ORDERSYNC_LOG_LEVEL": "debug",  # not one of our sections: ignored
        "PATH": "/usr/bin",
    }
    settings = load_settings(path, env=env)
    assert settings.batch_size == 2000
    assert settings.realtime_check == 2.5
    assert settings.mode is SyncMode.REALTIME
    assert settings.zoho.ignore_empty is True
    assert settings.zoho.accounts_url is None
    assert settings.zoho.client_secret.reveal() == "from-env"
    assert settings.source.dsn.reveal() == "postgresql://u:pw@db/x"


def test_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cr3t\n", encoding="utf-8")
    (tmp_path / "token").write_text("1000.tok\n", encoding="utf-8")
    path = write(
        tmp_path, f'[zoho]\nclient_secret_file = "{tmp_path / "secret"}"\nrefresh_token = "x"\n'
    )
    env = {"ORDERSYNC_ZOHO_REFRESH_TOKEN_FILE": str(tmp_path / "token")}
    settings = load_settings(path, env=env)
    assert settings.zoho.client_secret.reveal() == "s3cr3t"
    assert settings.zoho.refresh_token.reveal() == "1000.tok"  # env layer replaces the file's value
    assert "s3cr3t" not in repr(settings) and "1000.tok" not in repr(settings)
    assert "s3cr3t" not in str(describe_settings(settings))


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        (
            '[zoho]\nclient_secret = "a"\nclient_secret_file = "/etc/hostname"\n',
            "zoho.client_secret_file",
        ),
        ('[zoho]\nclient_secret_file = "/definitely/not/here"\n', "zoho.client_secret_file"),
        ('[source]\ndsn_file = ""\n', "source.dsn_file"),
        ('[source]\ndsn_file = "EMPTY"\n', "source.dsn_file"),
    ],
)
def test_bad_secret_files(tmp_path: Path, toml: str, key: str) -> None:
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    toml = toml.replace("EMPTY", str(tmp_path / "empty"))
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, toml), env={})
    assert caught.value.key == key
    assert key in str(caught.value)


BAD_CONFIGS = [
    # unknown sections and keys, with a suggestion
    ("[synk]\nbatch_size = 1\n", "synk", "did you mean 'sync'"),
    ("[sync]\nbach_size = 1\n", "sync.bach_size", "did you mean 'batch_size'"),
    ("[zoho]\nclient_secrett = 'x'\n", "zoho.client_secrett", "did you mean 'client_secret'"),
    ("sync = 3\n", "sync", "must be a table"),
    # wrong types
    ("[sync]\nbatch_size = '100'\n", "sync.batch_size", "expected an integer, got a string"),
    ("[sync]\nbatch_size = true\n", "sync.batch_size", "expected an integer"),
    ("[sync]\nrealtime_max_delay = 'soon'\n", "sync.realtime_max_delay", "expected a number"),
    ("[zoho]\nignore_empty = 1\n", "zoho.ignore_empty", "expected true or false"),
    ("[source]\ntable = 7\n", "source.table", "expected a string"),
    # ranges and vocabularies
    ("[sync]\nbatch_size = 0\n", "sync.batch_size", "between 1 and 25,000"),
    ("[sync]\nbatch_size = 25001\n", "sync.batch_size", "between 1 and 25,000"),
    ("[sync]\nmax_attempts = 0\n", "sync.max_attempts", "at least 1"),
    ("[sync]\nrealtime_check = 0\n", "sync.realtime_check", "greater than 0"),
    ("[zoho]\ndata_centre = 'uk'\n", "zoho.data_centre", "us, eu, in, au, jp, cn, ca, sa"),
    ("[zoho]\naccounts_url = '127.0.0.1:8010'\n", "zoho.accounts_url", "http://"),
    ("[zoho]\ncredit_reserve = 60000\n", "zoho.credit_reserve", "daily_credit_budget"),
    ("[zoho]\ndaily_credit_budget = 1000\n", "zoho.credit_reserve", "must be smaller"),
    ("[sync]\nmode = 'sometimes'\n", "sync.mode", "realtime, interval, both"),
    ("[sync]\ninterval_crontab = '0 */12 * *'\n", "sync.interval_crontab", "5 fields"),
    ("[sync]\ninterval_crontab = '0 25 * * *'\n", "sync.interval_crontab", "hour"),
    ("[sync]\norg_timezone = 'Mars/Olympus'\n", "sync.org_timezone", "unknown time zone"),
    (
        "[sync]\norg_timezone = 'UTC'\n[zoho]\norg_timezone = 'Asia/Tokyo'\n",
        "zoho.org_timezone",
        "differs",
    ),
    ("[sync]\nbroker_url = 'localhost'\n", "sync.broker_url", "URL"),
    ("[source]\nsynced_column = 'zoho_id'\n", "source.synced_column", "must differ"),
    # mapping problems
    ("[mapping]\ncolumn = 'id'\n", "mapping", "[[mapping]]"),
    (
        MAPPING + "[[mapping]]\ncolumn = 'x'\napi_name = 'X'\ntype = 'txt'\n",
        "mapping[3].type",
        "did you mean 'text'",
    ),
    (MAPPING + "[[mapping]]\ncolumn = 'x'\napi_name = 'X'\n", "mapping[3].type", "required"),
    (
        MAPPING + "[[mapping]]\ncolumn = 'x'\napi_name = 'X'\ntype = 'text'\nmaxlen = 3\n",
        "mapping[3].maxlen",
        "did you mean 'max_length'",
    ),
    (
        MAPPING + "[[mapping]]\ncolumn = 'status'\napi_name = 'S2'\ntype = 'text'\n",
        "mapping[3].column",
        "already mapped by mapping[2]",
    ),
    (
        MAPPING + "[[mapping]]\ncolumn = 'x'\napi_name = 'Name'\ntype = 'text'\n",
        "mapping[3].api_name",
        "already fed by mapping[1]",
    ),
    (
        MAPPING + "[[mapping]]\ncolumn = 'x'\napi_name = 'X'\ntype = 'integer'\nmax_length = 5\n",
        "mapping[3].max_length",
        "text and multiline",
    ),
    (
        MAPPING + "[[mapping]]\ncolumn = 'x'\napi_name = 'X'\ntype = 'text'\nmax_length = 256\n",
        "mapping[3].max_length",
        "between 1 and 255",
    ),
    (
        MAPPING
        + "[[mapping]]\ncolumn = 'x'\napi_name = 'X'\ntype = 'multiline'\nmax_length = 32001\n",
        "mapping[3].max_length",
        "between 1 and 32,000",
    ),
    (
        MAPPING + "[[mapping]]\ncolumn = 'x'\napi_name = 'X'\ntype = 'picklist'\n",
        "mapping[3].allowed",
        "allowed values",
    ),
    (
        MAPPING + "[[mapping]]\ncolumn = 'x'\napi_name = 'X'\ntype = 'text'\nallowed = ['a']\n",
        "mapping[3].allowed",
        "only a picklist",
    ),
    (
        MAPPING + "[[mapping]]\ncolumn = 'synced'\napi_name = 'X'\ntype = 'boolean'\n",
        "mapping[3].column",
        "sync columns",
    ),
    (
        MAPPING.replace('api_name = "parent_id"', 'api_name = "Parent"'),
        "mapping[0].api_name",
        "unique field 'parent_id'",
    ),
    ("[source]\nkey_column = 'order_id'\n" + MAPPING, "mapping", "'order_id' (source.key_column)"),
    # the key mapped fourth: Zoho's result file only names the first three columns
    (
        "[[mapping]]\ncolumn = 'a'\napi_name = 'A'\ntype = 'text'\n"
        "[[mapping]]\ncolumn = 'b'\napi_name = 'B'\ntype = 'text'\n"
        "[[mapping]]\ncolumn = 'c'\napi_name = 'C'\ntype = 'text'\n"
        "[[mapping]]\ncolumn = 'id'\napi_name = 'parent_id'\ntype = 'text'\n",
        "mapping[3]",
        "first three",
    ),
    # without [[mapping]] the demo mapping keys on "id"
    ("[source]\nkey_column = 'order_id'\n", "mapping", "not mapped"),
]


@pytest.mark.parametrize(("toml", "key", "fragment"), BAD_CONFIGS)
def test_each_bad_config_names_its_key(tmp_path: Path, toml: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, toml), env={})
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    ("env", "key", "fragment"),
    [
        ({"ORDERSYNC_SYNC_BACH_SIZE": "1"}, "sync.bach_size", "ORDERSYNC_SYNC_BATCH_SIZE"),
        ({"ORDERSYNC_SYNC_BATCH_SIZE": "many"}, "sync.batch_size", "ORDERSYNC_SYNC_BATCH_SIZE"),
        ({"ORDERSYNC_SYNC_BATCH_SIZE": "30000"}, "sync.batch_size", "25,000"),
        ({"ORDERSYNC_ZOHO_IGNORE_EMPTY": "maybe"}, "zoho.ignore_empty", "true or false"),
        ({"ORDERSYNC_ZOHO_DATA_CENTRE": "mars"}, "zoho.data_centre", "unknown data centre"),
        (
            {
                "ORDERSYNC_ZOHO_CLIENT_SECRET": "a",
                "ORDERSYNC_ZOHO_CLIENT_SECRET_FILE": "/etc/hostname",
            },
            "zoho.client_secret_file",
            "not both",
        ),
    ],
)
def test_bad_environment_names_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], key: str, fragment: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env)
    assert caught.value.key == key
    assert fragment in caught.value.message


def test_a_secret_value_is_never_echoed_in_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            write(tmp_path, "[sync]\nbatch_size = 0\n"),
            env={"ORDERSYNC_ZOHO_CLIENT_SECRET": "do-not-print"},
        )
    assert "do-not-print" not in str(caught.value)


def test_config_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(ConfigError("sync.batch_size", "too big")))
    assert (error.key, error.message, str(error)) == (
        "sync.batch_size",
        "too big",
        "sync.batch_size: too big",
    )


def test_missing_credentials_are_reported_by_check_not_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={"ORDERSYNC_ZOHO_CLIENT_ID": "1000.X"})
    assert [p.key for p in check_settings(settings)] == ["zoho.client_secret", "zoho.refresh_token"]


def test_describe_masks_secrets_and_url_passwords(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[source]\ndsn = "postgresql://u:hunter2@db/x"\n'
        '[zoho]\nclient_secret = "cs"\nrefresh_token = "rt"\n'
        '[sync]\nbroker_url = "redis://:brokerpw@redis:6379/0"\n',
    )
    described = describe_settings(load_settings(path, env={}))
    assert described["source"]["dsn"] == "********"
    assert described["zoho"]["client_secret"] == described["zoho"]["refresh_token"] == "********"
    assert described["sync"]["broker_url"] == "redis://:********@redis:6379/0"
    assert "hunter2" not in str(described) and "brokerpw" not in str(described)
    assert described["sync"]["batch_size"] == 25_000
    assert described["mapping"][0] == {
        "column": "id",
        "api_name": "parent_id",
        "type": "text",
        "max_length": 255,
        "mandatory": True,
    }


@pytest.mark.parametrize(
    ("expression", "ok"),
    [
        ("0 */12 * * *", True),
        ("*/5 * * * *", True),
        ("0 9-17 * * mon-fri", True),
        ("30 2 1,15 jan,jul 0", True),
        ("* * * *", False),
        ("60 * * * *", False),
        ("0 0 0 * *", False),
        ("0 0 * 13 *", False),
        ("0 0 * * 7", False),
        ("*/0 * * * *", False),
        ("1-2-3 * * * *", False),
        ("x * * * *", False),
    ],
)
def test_crontab_problem(expression: str, ok: bool) -> None:
    assert (crontab_problem(expression) is None) is ok


def test_overriding_some_zoho_hosts_warns_about_the_others(tmp_path: Path) -> None:
    path = write(tmp_path, '[zoho]\naccounts_url = "http://127.0.0.1:8010"\n')
    problems = [p for p in check_settings(load_settings(path, env={})) if p.severity == "warning"]
    assert [p.key for p in problems] == ["zoho.api_url", "zoho.upload_url"]
    assert "https://www.zohoapis.com" in problems[0].message
