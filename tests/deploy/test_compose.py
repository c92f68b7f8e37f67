"""docker-compose.yml and deploy/ordersync.env.example against the code they run.

Every command names a real entry point of ours (asked for ``--help`` in a subprocess), every
``ORDERSYNC_*`` variable is one the settings (or the Celery app) read, no secret is inline, and
every long-running service has a health check and a restart policy. No Docker engine needed.
"""

from __future__ import annotations

import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pipeline.credentials import new_secret
from pipeline.settings import (
    CONFIG_ENV,
    ConfigError,
    Settings,
    describe_settings,
    load_settings,
)
from tasks.base import TIME_LIMIT
from tasks.config import (
    ENV_NAMESPACE,
    ENV_RESTORE_INTERVAL,
    ENV_VISIBILITY_TIMEOUT,
    CeleryOptions,
    Queue,
)
from tests.deploy.deployfiles import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    ENV_FILE,
    REPO,
    Invocation,
    active_env,
    as_argv,
    commands_in,
    env_example_lines,
    healthcheck_argvs,
    invocation,
    load_compose,
    our_services,
    run_help,
    service_argv,
)
from tests.fixtures.tools import requires_tool

CORE_SERVICES = {"postgres", "redis", "worker", "beat", "flower", "web"}
DEMO_SERVICES = {"zohosim", "seed"}
ONE_SHOT = {"seed", "cli"}  # run to completion: restart "no", no health check
CELERY_ENV = {ENV_NAMESPACE, ENV_VISIBILITY_TIMEOUT, ENV_RESTORE_INTERVAL}
SECRET_WORDS = re.compile(r"pass(word)?|secret|token|basic_auth|api_key|dsn", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)
PLACEHOLDER_VALUE = re.compile(r"CHANGE_ME\w*")


def filled_in(value: str) -> str:
    """A template value with its ``CHANGE_ME…`` placeholder replaced, as an operator does."""
    return PLACEHOLDER_VALUE.sub("Qz7-filled-in-secret-4xK", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture
def no_config_file(tmp_path: Path) -> Path:
    """An empty settings file, so a stray ./ordersync.toml cannot take part."""
    path = tmp_path / "empty.toml"
    path.write_text("", encoding="utf-8")
    return path


def flower_options() -> set[str]:
    """Flower's option names, as on its command line (``basic-auth``)."""
    from flower.options import options

    return set(options._options)


def _all_invocations(compose: dict[str, Any]) -> dict[tuple[str, ...], tuple[Invocation, set[str]]]:
    """Each distinct ``--help`` call, with the options used and where."""
    found: dict[tuple[str, ...], tuple[Invocation, set[str]]] = {}
    for name, spec in our_services(compose).items():
        argvs = []
        if "command" in spec or "entrypoint" in spec:
            argvs.extend(commands_in(service_argv(spec)))
        argvs.extend(healthcheck_argvs(spec))
        for argv in argvs:
            inv = invocation(argv)
            if inv is None:
                continue
            known_inv, used_by = found.setdefault(
                inv.help_argv, (Invocation(inv.help_argv, (), inv.description), set())
            )
            merged = tuple(sorted({*known_inv.options, *inv.options}))
            found[inv.help_argv] = (Invocation(inv.help_argv, merged, inv.description),
                                    used_by | {name})
    return found


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= CORE_SERVICES | DEMO_SERVICES
    for name in CORE_SERVICES:
        assert "profiles" not in services[name], f"{name} must run without a profile"
    for name in DEMO_SERVICES:
        assert services[name].get("profiles") == ["demo"], f"{name} belongs to the demo profile"
    beats = [n for n, s in services.items() if " beat" in " ".join(as_argv(s.get("command", [])))]
    assert beats == ["beat"], "exactly one beat service"
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_every_command_names_a_real_entry_point(compose: dict[str, Any]) -> None:
    calls = _all_invocations(compose)
    described = {inv.description for inv, _ in calls.values()}
    # the services this file must run, whatever else it grows
    for expected in (
        ("celery worker",),
        ("celery beat",),
        ("celery flower",),
        ("python -m cli.web", "ordersync web"),  # `ordersync web` once the CLI has it
        ("zohosim serve --host",),
        ("ordersync demo seed",),
        ("ordersync config check",),
    ):
        assert any(d.startswith(expected) for d in described), f"no {expected} in {described}"

    def check(item: tuple[Invocation, set[str]]) -> None:
        inv, used_by = item
        output = run_help(inv)
        if inv.description == "celery flower":  # Tornado options, not in `--help`
            output = " ".join(f"--{name}" for name in flower_options())
        for option in inv.options:
            assert option in output, (
                f"{sorted(used_by)}: {inv.description} has no option {option}:\n{output}"
            )

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(check, calls.values()))


def test_celery_commands_use_our_app_and_queues(compose: dict[str, Any]) -> None:
    import tasks.app

    assert isinstance(tasks.app.app.conf.task_queues, list | tuple)
    our_queues = {q.value for q in Queue}
    worker = as_argv(compose["services"]["worker"]["command"])
    queues = set(worker[worker.index("-Q") + 1].split(","))
    assert queues == our_queues, "the worker consumes exactly our queues"
    assert {q.name for q in tasks.app.app.conf.task_queues} >= queues
    assert "-E" in worker, "workers send events (Flower)"

    beat = as_argv(compose["services"]["beat"]["command"])
    scheduler = beat[beat.index("-S") + 1]
    assert scheduler == "redbeat.RedBeatScheduler"
    module, _, cls = scheduler.rpartition(".")
    assert hasattr(__import__(module, fromlist=[cls]), cls)
    assert tasks.app.app.conf.redbeat_redis_url, "redbeat needs its Redis URL from the settings"
    max_interval = int(beat[beat.index("--max-interval") + 1])
    assert max_interval * 3 <= tasks.app.app.conf.redbeat_lock_timeout, "lock renewed in time"


def test_flower_requires_basic_auth_from_the_env_file(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    argvs = list(commands_in(as_argv(flower["command"])))
    text = " ".join(" ".join(a) for a in argvs)
    assert "--basic-auth" not in text and "--basic_auth" not in text, "credentials inline"
    assert argvs[0] == ["ordersync", "secret", "check", "FLOWER_BASIC_AUTH"], (
        "Flower must refuse to run open, or with a placeholder password"
    )
    assert ENV_FILE in flower["env_file"]
    # the template names the variable but ships no password: a copied template refuses to run
    assert active_env()["FLOWER_BASIC_AUTH"] == ""
    for line in env_example_lines():  # Flower reads FLOWER_<OPTION>; a typo would be ignored
        if line.name.startswith("FLOWER_"):
            option = line.name.removeprefix("FLOWER_").lower().replace("_", "-")
            assert option in flower_options(), f"{line.name} is not a Flower option"
    assert "FLOWER_UNAUTHENTICATED_API" not in active_env()


def test_ordersync_variables_are_read_by_the_settings(
    compose: dict[str, Any], no_config_file: Path, tmp_path: Path
) -> None:
    names: dict[str, str] = {}  # name -> a value to load it with
    for line in env_example_lines():
        names.setdefault(line.name, line.value)
    for spec in compose["services"].values():
        environment = spec.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for name, value in environment.items():
            names.setdefault(name, str(value))
    for name in re.findall(r"\$\{?(ORDERSYNC_[A-Z0-9_]+)", COMPOSE_FILE.read_text()):
        names.setdefault(name, "")

    secret_file = tmp_path / "secret"
    secret_file.write_text("placeholder-secret\n", encoding="utf-8")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text("postgresql://ordersync:Qz7-filled-in-4xK@db/orders\n", encoding="utf-8")
    checked = 0
    for name, value in sorted(names.items()):
        if not name.startswith("ORDERSYNC_"):
            continue
        checked += 1
        if name in CELERY_ENV:
            CeleryOptions.from_env({name: value})  # a bad value raises
            continue
        if name == CONFIG_ENV:
            continue
        section = name.split("_")[1]
        with pytest.raises(ConfigError):  # proves the settings read this section at all
            load_settings(no_config_file, {f"ORDERSYNC_{section}_NO_SUCH_KEY": "1"})
        if name.endswith("_FILE"):
            value = str(secret_file)
            if name == "ORDERSYNC_SOURCE_DSN_FILE":  # the DSN must parse
                value = str(dsn_file)
        if PLACEHOLDER_VALUE.search(value):  # a copied template does not run as it is
            with pytest.raises(ConfigError, match="placeholder") as refused:
                load_settings(no_config_file, {name: value})
            assert value not in str(refused.value)
            value = filled_in(value)
        try:
            load_settings(no_config_file, {name: value})
        except ConfigError as exc:
            pytest.fail(f"{name}={value!r} ({ENV_EXAMPLE.name}): {exc}")
    assert checked > 20


def test_env_example_loads_and_documents_every_setting(no_config_file: Path) -> None:
    shipped = active_env()
    # as shipped it refuses to run: every process loads the settings at start-up
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings(no_config_file, shipped)
    env = {name: filled_in(value) for name, value in shipped.items()}
    settings = load_settings(no_config_file, env)
    assert settings.zoho.client_secret.reveal() == env["ORDERSYNC_ZOHO_CLIENT_SECRET"]
    assert settings.source.dsn.reveal() == env["ORDERSYNC_SOURCE_DSN"]
    assert str(settings.work_dir) == env["ORDERSYNC_SYNC_WORK_DIR"]
    assert f"{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@" in env["ORDERSYNC_SOURCE_DSN"]
    assert env["ORDERSYNC_SOURCE_DSN"].endswith(f"/{env['POSTGRES_DB']}")

    # with the demo block uncommented (a later line wins)
    demo = dict(env)
    lines = env_example_lines()
    start = next(i for i, line in enumerate(lines) if line.name == "POSTGRES_DB")
    demo.update({line.name: line.value for line in lines[start + 1 :]})
    assert demo["ORDERSYNC_ZOHO_ACCOUNTS_URL"] == "http://zohosim:8010"
    assert load_settings(no_config_file, demo).zoho.callback_url == "http://web:8080"

    documented = {line.name for line in lines} | set(
        re.findall(r"ORDERSYNC_[A-Z0-9_]+", ENV_EXAMPLE.read_text())
    )
    described = describe_settings(Settings())
    for section in ("source", "zoho", "sync"):
        for key in described[section]:
            name = f"ORDERSYNC_{section}_{key}".upper()
            assert name in documented, f"{name} is not in {ENV_EXAMPLE.name}"
    assert CELERY_ENV | {CONFIG_ENV} <= documented
    assert len(described["sync"]) == len(
        [f for f in fields(Settings) if f.name not in ("source", "zoho", "mapping")]
    )


def test_env_example_format_suits_compose_and_systemd() -> None:
    for number, text in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"line {number}: {text!r}"
        assert " #" not in value, f"line {number}: no comment after a value (systemd keeps it)"
        assert not value.startswith(("'", '"')), f"line {number}: no quotes"
        assert "$" not in value, f"line {number}: compose would expand $"


def test_no_secret_inline(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert not URL_WITH_PASSWORD.search(text), "a URL with a password in docker-compose.yml"
    for line in env_example_lines():
        if SECRET_WORDS.search(line.name) and line.active and line.value:
            assert line.value not in text, f"the value of {line.name} is in docker-compose.yml"

    def scalars(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from scalars(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from scalars(value, f"{path}[{i}]")
        else:
            yield path, str(node)

    for name, spec in compose["services"].items():
        environment = spec.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for key, value in environment.items():
            if SECRET_WORDS.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+\}", str(value)), (
                    f"{name}: {key} must come from env_file or ${{VAR}}, not inline"
                )
        for path, value in scalars(spec.get("command", []), name):
            assert not re.search(r"--(basic[-_]auth|password|secret|token)\b", value), path
            assert not re.search(r"(password|secret|token)=\S", value, re.IGNORECASE), path
        if name != "zohosim" and (name in our_services(compose) or name == "postgres"):
            assert spec.get("env_file") == [ENV_FILE], f"{name} reads {ENV_FILE}"

    tracked = subprocess.run(
        ["git", "ls-files", "--", ENV_FILE], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert tracked.stdout == "", f"{ENV_FILE} holds secrets and must not be committed"
    ignored = subprocess.run(["git", "check-ignore", "-q", ENV_FILE], cwd=REPO)
    assert ignored.returncode == 0, f"{ENV_FILE} must be in .gitignore"


def test_health_checks_restart_policies_and_volumes(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        if name in ONE_SHOT:
            assert spec.get("restart") == "no", f"{name} runs once"
            continue
        assert spec.get("restart") == "unless-stopped", f"{name}: restart policy"
        check = spec.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name}: no health check"
        assert check.get("interval") and check.get("retries"), f"{name}: health check timing"

    services = compose["services"]
    assert "inspect ping" in " ".join(healthcheck_argvs(services["worker"])[0])
    assert "/healthz" in " ".join(healthcheck_argvs(services["web"])[0])
    assert "/healthcheck" in " ".join(healthcheck_argvs(services["flower"])[0])
    assert "/__sim/health" in " ".join(healthcheck_argvs(services["zohosim"])[0])

    # Celery's warm shutdown gets at least the hard time limit of a task.
    grace = services["worker"]["stop_grace_period"]
    assert int(grace.rstrip("s")) > TIME_LIMIT
    assert services["worker"]["stop_signal"] == "SIGTERM"

    named = set(compose.get("volumes", {}))
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["postgres"]["volumes"]}
    assert mounts["/var/lib/postgresql/data"] in named
    work_dir = active_env()["ORDERSYNC_SYNC_WORK_DIR"]
    for name in ("worker", "web"):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert mounts.get(work_dir) in named, f"{name}: work_dir {work_dir} on a named volume"
    for name in ("postgres", "redis"):
        assert "ports" not in services[name], f"{name} is not published"
    for name in ("flower", "web"):
        for port in services[name].get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} published on all addresses"


def test_dockerfile() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    instructions = [
        line.split(None, 1) for line in text.splitlines() if line and not line.startswith("#")
    ]
    assert "python:3.11-slim" in text
    assert re.search(r"pip install \.", text)
    users = [rest for first, *rest in instructions if first == "USER"]
    assert users and not users[-1][0].startswith(("root", "0")), "runs as a non-root user"
    assert any(first == "HEALTHCHECK" for first, *_ in instructions)
    for first, *rest in instructions:
        if first in ("ENV", "ARG"):
            assert not SECRET_WORDS.search(" ".join(rest)), f"secret in the image: {rest}"
        if first == "COPY" and "--from" not in rest[0]:
            for source in rest[0].split()[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert ignore[ignore.index("*") :][0] == "*", ".dockerignore lets in only what it names"
    assert not any(entry.startswith("!") and "env" in entry for entry in ignore)
    assert not any("ordersync.toml" in entry for entry in ignore if entry.startswith("!"))
    # every package pyproject ships is copied in and let through .dockerignore
    copied = {rest[0].split()[0].rstrip("/") for first, *rest in instructions if first == "COPY"}
    for package in ("cli", "pipeline", "tasks", "zohosim"):
        assert package in copied, f"the image lacks {package}/ (COPY {package} ./{package})"
        assert f"!{package}/" in ignore, f".dockerignore keeps {package}/ out of the image"


# The Compose specification's JSON schema as docker-compose 1.29.2 ships it (Apache-2.0; Debian's
# docker-compose package: compose/config/compose_spec.json). It predates the top-level ``name``.
COMPOSE_SCHEMA = Path(__file__).with_name("compose_spec.json")


def test_compose_file_fits_the_compose_schema() -> None:
    """The schema check docker-compose makes, without docker: unknown keys, wrong types."""
    document = load_compose()
    name = document.pop("name")
    assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name), f"project name {name!r}"
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(document)]  # fmt: skip
    assert problems == []
    # the check has teeth: a misspelt key in a service is refused
    document["services"]["web"]["heathcheck"] = document["services"]["web"]["healthcheck"]
    assert any("heathcheck" in e.message for e in validator.iter_errors(document))


@requires_tool("docker-compose", "Debian: apt-get install docker-compose")
def test_docker_compose_v1_validates_the_file(tmp_path: Path) -> None:
    """The Compose schema check of docker-compose 1.x (it lacks the top-level ``name``)."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    (tmp_path / "docker-compose.yml").write_text(
        re.sub(r"(?m)^name: .*$", "", text), encoding="utf-8"
    )
    (tmp_path / "deploy" / "config").mkdir(parents=True)
    (tmp_path / "deploy" / "ordersync.env").write_text(ENV_EXAMPLE.read_text(encoding="utf-8"))
    proc = subprocess.run(
        ["docker-compose", "--profile", "demo", "--profile", "monitoring", "--profile", "tools",
         "config", "--services"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == set(load_compose()["services"])


def test_no_accidental_interpolation() -> None:
    """A bare ``$VAR`` would be filled in by compose from the operator's shell, not by the
    container: variables the container reads are written ``$$VAR``."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    bare = re.findall(r"(?<!\$)\$(?!\$)[{A-Za-z_][^\s'\"]*", text.replace("$$", ""))
    assert bare == [], f"compose would interpolate {bare} from the host environment"


@pytest.mark.parametrize(
    ("service", "variable", "image_entry"),
    [
        ("postgres", "POSTGRES_PASSWORD", "exec docker-entrypoint.sh postgres"),
        ("grafana", "GF_SECURITY_ADMIN_PASSWORD", "exec /run.sh"),
    ],
)
def test_images_without_ordersync_refuse_a_default_password(
    compose: dict[str, Any], service: str, variable: str, image_entry: str
) -> None:
    """The guard in front of the image's own entry point, run by ``sh`` as in the container
    (that entry point replaced by ``echo started``): the rule of ``ordersync secret check``."""
    argv = as_argv(compose["services"][service]["entrypoint"])
    assert argv[:2] == ["sh", "-c"] and argv[2].endswith(image_entry)
    script = argv[2].removesuffix(image_entry) + "echo started"
    assert PLACEHOLDER_VALUE.search(active_env()[variable]), "the template's value is refused"
    for value, started in (
        ("", False),
        (active_env()[variable], False),
        ("change_me_but_long_enough", False),
        ("short-pw", False),
        (new_secret(), True),
    ):
        done = subprocess.run(
            ["sh", "-c", script], env={"PATH": "/usr/bin:/bin", variable: value},
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        assert (done.stdout.strip() == "started") is started, (value, done.stdout, done.stderr)
        if not started:
            assert done.returncode == 78 and variable in done.stderr, done.stderr
            assert not value or value not in done.stderr
