"""``privml serve --workers 2`` with the key in ``PRIVML_VAULT_KEY``: both workers answer, and
the key is in no process's command line and nowhere in the server's log."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from _server import Server, server

from conftest import Setup, build

pytestmark = pytest.mark.sqlite_only("processes and their command lines, not the metadata")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("workers")
    return build(root / "vault", root / "vault.key")


@pytest.fixture(scope="module")
def workers(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two workers; the key only in the environment (no --key-file on the command line)."""
    log = tmp_path_factory.mktemp("log") / "server.log"
    key = setup.key_file.read_text().strip()
    made = server(
        setup.folder,
        setup.key_file,
        log,
        args=["--workers", "2", "--rate", "100000", "--log-level", "info"],
        env={"PRIVML_VAULT_KEY": key},
    )
    at = made.command.index("--key-file")
    del made.command[at : at + 2]
    srv = made.start()
    yield srv
    srv.stop()


def group(srv: Server) -> list[int]:
    """The server's process group: the parent, its workers and helpers."""
    assert srv.process is not None
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getpgid(int(name)) == srv.process.pid:
                    pids.append(int(name))
            except ProcessLookupError:
                continue
    return pids


def owner(pids: list[int], server_port: int, client_port: int) -> int | None:
    """The process holding the server's end of the connection from ``client_port``."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if (
                state == "01"
                and int(local.rsplit(":", 1)[1], 16) == server_port
                and int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
        except OSError:
            continue
    return None


def answer(sock: socket.socket, host: str, token: str) -> bytes:
    """One keep-alive GET /v1/session on ``sock``; the response's status line."""
    request = (
        f"GET /v1/session HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Privml-Purpose: research\r\n\r\n"
    )
    sock.sendall(request.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    return data.split(b"\r\n", 1)[0]


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc")
def test_both_workers_answer(workers: Server, setup: Setup) -> None:
    host = workers.url.removeprefix("http://")
    port = int(host.rsplit(":", 1)[1])
    pids = group(workers)
    answered: dict[int, int] = {}
    held: list[socket.socket] = []
    try:
        for _ in range(200):  # keep connections open until both workers hold some
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            held.append(sock)
            assert answer(sock, host, setup.tokens["ana"]) == b"HTTP/1.1 200 OK"
            pid = owner(pids, port, sock.getsockname()[1])
            assert pid is not None and pid != workers.process.pid  # type: ignore[union-attr]
            answered[pid] = answered.get(pid, 0) + 1
            if len(answered) == 2:
                break
    finally:
        for sock in held:
            sock.close()
    assert len(answered) == 2, answered


def test_the_key_is_in_no_command_line_and_not_in_the_log(workers: Server, setup: Setup) -> None:
    key = setup.key_file.read_text().strip()
    pids = group(workers)
    assert len(pids) >= 3  # the parent and two workers
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert key.encode() not in cmdline
        assert b"--key-file" not in cmdline
    import httpx

    for token in (setup.tokens["ana"], key, "tok_nonsense"):
        httpx.get(
            f"{workers.url}/v1/session",
            headers={"Authorization": f"Bearer {token}", "Privml-Purpose": "research"},
        )
    output = workers.log.read_text(errors="replace")
    assert "/v1/session" in output  # request lines are logged (info), and ...
    assert key not in output  # ... the key never, not even when sent as a token
    assert setup.tokens["ana"] not in output
