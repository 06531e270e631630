"""Real curator servers for the tests: ``python -m privml serve`` on 127.0.0.1, a free port."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One ``privml serve`` process and how it was started (to start it again)."""

    command: list[str]
    env: dict[str, str]
    log: Path
    url: str
    verify: bool | str = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, *, wait: float = 60.0) -> Server:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited ({self.process.returncode}): {self.output()}"
                )
            try:
                verify = (
                    ssl.create_default_context(cafile=self.verify)
                    if isinstance(self.verify, str)
                    else self.verify
                )
                if httpx.get(f"{self.url}/v1/health", verify=verify, timeout=2).is_success:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not answer within {wait} s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL the server and its workers: no clean-up runs."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def server(
    vault: Path | None,
    key_file: Path,
    log: Path,
    *,
    args: Sequence[str] = (),
    metadata_url: str | None = None,
    tls: tuple[Path, Path] | None = None,
    ca: Path | None = None,
    env: dict[str, str] | None = None,
) -> Server:
    """A server (not started) for the vault in ``vault`` opened with ``key_file``."""
    port = free_port()
    command = [sys.executable, "-m", "privml", "serve"]
    command += [str(vault)] if vault is not None else []
    command += ["--key-file", str(key_file), "--port", str(port), "--log-level", "warning"]
    if metadata_url is not None:
        command += ["--metadata-url", metadata_url]
    if tls is not None:
        command += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    command += list(args)
    full_env = {
        **{k: v for k, v in os.environ.items() if k != "PRIVML_VAULT_KEY"},
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    scheme = "https" if tls is not None else "http"
    return Server(command, full_env, log, f"{scheme}://127.0.0.1:{port}", str(ca) if ca else False)
