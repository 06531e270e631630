"""Flower's deployment engine on one machine or several: SuperLink, SuperNodes, a run.

Every process here is Flower's own command (``flower-superlink``, ``flower-supernode``,
``flwr run``) started with the Python that runs privml, so they find privml's apps. TLS
is off (``--insecure``) only on the loopback interface; across machines give Flower its
certificates as its documentation says. Flower keeps its apps and its CLI settings
under ``FLWR_HOME``; each federation here has its own folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import ConfigurationError

__all__ = ["FlowerProcesses", "free_port", "submit", "wait_for_port"]

#: The Flower app privml submits: its components are privml's, installed with privml.
_APP_TOML = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "privmlfederated"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "privml"

[tool.flwr.app.components]
serverapp = "privml.federated._apps:server_app"
clientapp = "privml_client_app:{clientapp}"

[tool.flwr.app.config]
{config}
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, *, timeout: float, process: subprocess.Popen[bytes]) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; raise if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigurationError(f"{process.args!r} exited with status {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise ConfigurationError(f"nothing listened on 127.0.0.1:{port} after {timeout:g} s")


def _command(name: str) -> list[str]:
    """Flower's console script ``name`` beside this Python."""
    script = Path(sys.executable).with_name(name)
    found = str(script) if script.exists() else shutil.which(name)
    if found is None:
        raise ConfigurationError(f"{name} not found; pip install 'privml[federated]'")
    return [found]


@dataclass
class FlowerProcesses:
    """Flower processes started here, all stopped by :meth:`stop` (also on ``with`` exit)."""

    home: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _shared: set[int] = field(default_factory=set, repr=False)

    def environment(self) -> dict[str, str]:
        return flower_environment(self.home)

    def _start(
        self, args: list[str], log_name: str, *, own_group: bool = True
    ) -> subprocess.Popen[bytes]:
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / log_name).open("ab")
        process = subprocess.Popen(
            args,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own group: stop() ends Flower's children with it. Without, it stays in this
            # process's group, and whoever ends the group (a signal to a site) ends it too.
            start_new_session=own_group,
        )
        log.close()
        self.processes.append(process)
        if not own_group:
            self._shared.add(process.pid)
        return process

    def superlink(self, port: int, *, timeout: float = 60.0) -> subprocess.Popen[bytes]:
        """A SuperLink on 127.0.0.1:``port`` (fleet, control and runtime APIs)."""
        process = self._start(
            [
                *_command("flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            f"superlink-{port}.log",
        )
        wait_for_port(port, timeout=timeout, process=process)
        return process

    def supernode(
        self,
        superlink: str,
        port: int,
        node_config: Mapping[str, str],
        *,
        own_group: bool = True,
    ) -> subprocess.Popen[bytes]:
        """A SuperNode connected to ``superlink``, its runtime API on 127.0.0.1:``port``.

        ``own_group=False`` keeps it in this process's group: a site's SuperNode dies with
        the site when the site's group is signalled (its Flower helpers watch it and exit).
        """
        config = " ".join(f"{k}={json.dumps(v)}" for k, v in node_config.items())
        return self._start(
            [
                *_command("flower-supernode"),
                "--insecure",
                "--superlink",
                superlink,
                "--port",
                str(port),
                "--node-config",
                config,
            ],
            f"supernode-{port}.log",
            own_group=own_group,
        )

    def stop(self, *, timeout: float = 10.0) -> None:
        """End every process started here and its children (SIGTERM, then SIGKILL)."""
        for process in self.processes:
            if process.poll() is None:
                self._signal(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            self._signal(process, signal.SIGKILL)
            process.wait()
        self.processes.clear()
        self._shared.clear()

    def _signal(self, process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Signal the process's own group, or only the process if it shares this one's."""
        if process.pid not in self._shared:
            _signal_group(process, sig)
        elif process.poll() is None:
            process.send_signal(sig)

    def __enter__(self) -> FlowerProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def flower_environment(home: Path) -> dict[str, str]:
    """This process's environment for Flower: its home, telemetry off, this Python's scripts
    first on PATH (Flower starts its own helpers, e.g. ``flower-superexec``, by name)."""
    env = dict(os.environ)
    env["FLWR_HOME"] = str(home)
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def submit(home: Path, superlink: str, config: Mapping[str, Any], *, timeout: float) -> Path:
    """Submit privml's Flower app to ``superlink`` with ``config``; wait for it to finish.

    Returns the run's output folder (``config["output"]``), holding ``global.npz`` (the
    last aggregate) and ``rounds.jsonl`` (results and failures per round).
    """
    app = home / "app"
    app.mkdir(parents=True, exist_ok=True)
    # The ClientApp and the link's client side travel in the bundle as top-level modules:
    # the per-message ClientApp processes then never import privml (see _client_app).
    here = Path(__file__).parent
    for source, name in (
        ("_client_app.py", "privml_client_app.py"),
        ("_wire.py", "privml_wire.py"),
    ):
        (app / name).write_bytes((here / source).read_bytes())
    lines = "\n".join(f"{k} = {_toml_value(v)}" for k, v in config.items())
    clientapp = "client_app" if config.get("secagg", True) else "plain_client_app"
    (app / "pyproject.toml").write_text(_APP_TOML.format(config=lines, clientapp=clientapp))
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "privml"\n\n[superlink.privml]\n'
        f'address = "{superlink}"\ninsecure = true\n'
    )
    env = flower_environment(home)
    done = subprocess.run(
        [*_command("flwr"), "run", str(app), "privml", "--format", "json"],
        env=env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise ConfigurationError(
            f"flwr run failed ({done.returncode}): {done.stdout.decode()[-2000:]}"
            f"{done.stderr.decode()[-2000:]}"
        )
    output = Path(str(config["output"]))
    deadline = time.monotonic() + timeout
    while not (output / "done").exists():
        if time.monotonic() > deadline:
            raise ConfigurationError(f"the federated run did not finish in {timeout:g} s")
        time.sleep(0.2)
    return output
