"""Reading the deploy files (compose, env template, systemd units) and checking entry points."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / "deploy" / "ordersync.env.example"
ENV_FILE = "deploy/ordersync.env"  # what compose reads; only the example is committed
SYSTEMD_DIR = REPO / "deploy" / "systemd"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RUNBOOK = REPO / "docs" / "runbook.md"
BIN = Path(sys.executable).parent  # the venv's scripts: ordersync, zohosim, celery
OUR_IMAGE = "ordersync:local"
SHELL_PREFIXES = {"exec", "{", "}", "!"}  # words before the program in a simple command

_ENV_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


def load_compose() -> dict[str, Any]:
    """docker-compose.yml as data (YAML merge keys resolved by PyYAML)."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run our image."""
    return {
        name: spec
        for name, spec in compose["services"].items()
        if spec.get("image") == OUR_IMAGE or "build" in spec
    }


@dataclass(frozen=True)
class EnvLine:
    name: str
    value: str
    active: bool  # False: a commented example line
    line: int


def env_example_lines() -> list[EnvLine]:
    """Every ``NAME=value`` line of the env template, commented or not."""
    lines = []
    for number, text in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        match = _ENV_LINE.match(text.strip())
        if match:
            commented, name, value = match.groups()
            lines.append(EnvLine(name, value, commented is None, number))
    return lines


def active_env() -> dict[str, str]:
    """The variables the template sets (later lines win, as with compose and systemd)."""
    return {line.name: line.value for line in env_example_lines() if line.active}


def project_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml."""
    with (REPO / "pyproject.toml").open("rb") as handle:
        return dict(tomllib.load(handle)["project"]["scripts"])


def service_argv(spec: dict[str, Any]) -> list[str]:
    """What a service runs: its ``entrypoint`` (the image has none) followed by ``command``."""
    return as_argv(spec.get("entrypoint", [])) + as_argv(spec.get("command", []))


def as_argv(command: str | list[str]) -> list[str]:
    """A compose ``command`` as argv; ``$$`` is compose's escape for ``$``."""
    if isinstance(command, str):
        return shlex.split(command.replace("$$", "$"))
    return [str(part).replace("$$", "$") for part in command]


def commands_in(argv: list[str]) -> Iterator[list[str]]:
    """The program invocations in ``argv``: itself, or those in a ``sh -c`` script."""
    if len(argv) >= 3 and Path(argv[0]).name in ("sh", "bash") and argv[1] == "-c":
        yield from shell_commands(argv[2])
    else:
        yield argv


def shell_commands(script: str) -> Iterator[list[str]]:
    """Simple commands of a shell script (split at ; && || | and redirections)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    current: list[str] = []
    skip_next = False
    for token in lexer:
        if skip_next:  # the target of a redirection
            skip_next = False
            continue
        if set(token) <= set(";&|<>"):
            if current:
                yield current
            current = []
            skip_next = "<" in token or ">" in token  # skip the redirection's target
            continue
        if not current and token in SHELL_PREFIXES:
            continue
        current.append(token)
    if current:
        yield current


def healthcheck_argvs(spec: dict[str, Any]) -> list[list[str]]:
    """The commands of a compose health check (``CMD`` or ``CMD-SHELL``)."""
    test = spec.get("healthcheck", {}).get("test")
    if not test or test == ["NONE"]:
        return []
    if isinstance(test, str):
        return list(shell_commands(test.replace("$$", "$")))
    kind, *rest = test
    if kind == "CMD-SHELL":
        return list(shell_commands(" ".join(rest).replace("$$", "$")))
    return [[part.replace("$$", "$") for part in rest]]


@dataclass(frozen=True)
class Invocation:
    """How to ask one of our entry points for ``--help``, and the options it must know."""

    help_argv: tuple[str, ...]
    options: tuple[str, ...]
    description: str


def option_names(args: Iterable[str]) -> tuple[str, ...]:
    """Long options used (``--port=1`` and ``--port 1`` both give ``--port``)."""
    return tuple(sorted({a.split("=", 1)[0] for a in args if a.startswith("--")}))


def invocation(argv: list[str]) -> Invocation | None:
    """The ``--help`` call that proves ``argv`` names a real entry point of ours.

    None for programs that are not ours (``test``, ``echo``, ``pg_isready``, ...). Raises
    AssertionError for a program of ours that is not a known entry point.
    """
    program = Path(argv[0]).name
    scripts = project_scripts()
    if program in scripts:
        words = []
        for arg in argv[1:]:
            if arg.startswith("-"):
                break
            words.append(arg)
        rest = argv[1 + len(words) :]
        return Invocation(
            (str(BIN / program), *words, "--help"), option_names(rest), " ".join(argv[:3])
        )
    if program == "celery":
        assert argv[1:3] == ["-A", "tasks.app"], f"celery must run our app: {argv}"
        words = []
        for arg in argv[3:]:
            if arg.startswith("-"):
                break
            words.append(arg)
        assert words, f"celery without a subcommand: {argv}"
        rest = argv[3 + len(words) :]
        return Invocation(
            (str(BIN / "celery"), "-A", "tasks.app", *words, "--help"),
            option_names(rest),
            f"celery {' '.join(words)}",
        )
    if re.fullmatch(r"python3?(\.\d+)?", program):
        if argv[1] == "-m":
            rest = argv[3:]
            help_argv = (sys.executable, "-m", argv[2], "--help")
            return Invocation(help_argv, option_names(rest), f"python -m {argv[2]}")
        if argv[1] == "-c":
            compile(argv[2], "<healthcheck>", "exec")  # must at least be valid Python
            return None
        raise AssertionError(f"python must run a module (-m) or a check (-c): {argv}")
    if program in ("ordersync-web", "ordersync-worker"):
        raise AssertionError(f"{program} is not an entry point of ours")
    return None


def run_help(inv: Invocation) -> str:
    """Run ``inv.help_argv``; return its output, or fail the test with it."""
    returncode, output = _help_output(inv.help_argv)
    assert returncode == 0, f"{inv.description}: `{' '.join(inv.help_argv)}` failed:\n{output}"
    return output


@functools.cache
def _help_output(help_argv: tuple[str, ...]) -> tuple[int, str]:
    """One run per distinct call in a test session (compose and systemd share most)."""
    proc = subprocess.run(
        help_argv, cwd=REPO, env=help_env(), capture_output=True, text=True, timeout=120
    )
    return proc.returncode, proc.stdout + proc.stderr


def help_env() -> dict[str, str]:
    """The environment for ``--help`` runs: ours minus any ORDERSYNC_* of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSYNC_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit file as ``{section: [(key, value), ...]}`` (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    """Every value of ``key`` in ``section``."""
    return [v for k, v in unit.get(section, []) if k == key]


class Process:
    """A subprocess in its own process group, logging to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_log(self, text: str, timeout: float) -> bool:
        """True once ``text`` is in the log; False if it is not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            assert self.alive(), f"{self.proc.args} exited:\n{self.log()[-3000:]}"
            time.sleep(0.1)
        return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        """Signal the group, wait, SIGKILL if it lingers."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


def subprocess_env(base: dict[str, str]) -> dict[str, str]:
    """``base`` with this venv's scripts first on PATH (compose commands name them bare)."""
    env = dict(base)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_healthcheck(
    spec: dict[str, Any], env: dict[str, str], replace: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a compose service's health check here, as Docker would in the container.

    ``replace`` rewrites parts of it (a port, a host name) for the test's isolated processes.
    """
    test = spec["healthcheck"]["test"]
    kind, *rest = test
    if kind == "CMD-SHELL":
        argv = ["sh", "-c", " ".join(rest)]
    else:
        assert kind == "CMD", test
        argv = list(rest)
    argv = [part.replace("$$", "$") for part in argv]
    for old, new in (replace or {}).items():
        argv = [part.replace(old, new) for part in argv]
    if argv[0] == "python":
        argv[0] = sys.executable
    return subprocess.run(
        argv, cwd=REPO, env=subprocess_env(env), capture_output=True, text=True, timeout=60
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
