"""The local link between a site's ClientApp processes and the site process, attacked."""

from __future__ import annotations

import multiprocessing
import stat
import threading
from multiprocessing.connection import Client

import numpy as np
import pytest

pytest.importorskip("torch")

from privml.exceptions import ConfigurationError
from privml.federated import (
    ModelSpec,
    Site,
    _link,
)


@pytest.fixture
def served(dp_vault):
    site = Site(
        dp_vault.session("ana", purpose="studies"), "patients", features=["age"],
        target="sex", model=ModelSpec(inputs=1, outputs=2, hidden=(4,)),
        batch_size=2, max_grad_norm=1.0, noise_multiplier=8.0,
    )  # fmt: skip
    listener, address = _link.listen()
    stop = threading.Event()
    thread = threading.Thread(target=site.serve, args=(listener, stop), daemon=True)
    thread.start()
    yield site, address, dp_vault
    stop.set()
    _link.wake(address)
    thread.join(timeout=30)
    listener.close()


def test_a_peer_without_the_sites_key_is_refused_and_the_site_keeps_serving(served):
    site, address, vault = served
    with pytest.raises(multiprocessing.AuthenticationError):
        Client((address.host, address.port), authkey=b"\0" * 32)
    request = {"op": "fit", "round": 1, "rounds": 1}
    header, weights = _link.call(address, request, site.model.initial_weights())
    assert header == {"round": 1} and len(weights) == 4
    assert len(vault.ledger.events("patients")) == 1  # the one round, charged


def test_malformed_and_unknown_requests_cost_nothing(served):
    _, address, vault = served
    assert "error" in _link.call(address, {"op": "drop_tables"})[0]
    assert "error" in _link.call(address, {"op": "fit"})[0]  # no round
    wrong = [np.zeros(3)]  # wrong shapes: refused before the run is reserved
    header, _ = _link.call(address, {"op": "fit", "round": 1, "rounds": 2}, wrong)
    assert "error" in header
    header, _ = _link.call(
        address,
        {"op": "fit", "round": 1},
        ModelSpec(inputs=1, outputs=2, hidden=(4,)).initial_weights(),
    )
    assert "rounds to reserve" in header["error"]  # no planned rounds: nothing reserved
    assert vault.ledger.events("patients").empty


def test_the_link_carries_no_pickles_and_its_file_is_private(tmp_path):
    with pytest.raises(ValueError):
        _link.encode({}, [np.array([object()], dtype=object)])
    listener, address = _link.listen()
    listener.close()
    path = tmp_path / "link.json"
    address.write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _link.LinkAddress.read(path) == address
    with pytest.raises(ConfigurationError, match="privml federated site"):
        _link.LinkAddress.read(tmp_path / "missing.json")


def test_waking_a_link_nobody_serves_returns_at_once(dp_vault):
    """A stop that finds the site between requests: its serve loop has ended, and the wake
    (a bare connection, no handshake) must not wait for an accept that never comes."""
    site = Site(
        dp_vault.session("ana", purpose="studies"), "patients", features=["age"],
        target="sex", model=ModelSpec(inputs=1, outputs=2, hidden=(4,)),
        batch_size=2, max_grad_norm=1.0, noise_multiplier=8.0,
    )  # fmt: skip
    listener, address = _link.listen()
    stop = threading.Event()
    thread = threading.Thread(target=site.serve, args=(listener, stop), daemon=True)
    thread.start()
    stop.set()
    _link.wake(address)  # the serving thread takes the bare connection and ends
    thread.join(timeout=30)
    assert not thread.is_alive()
    done = threading.Event()
    waker = threading.Thread(target=lambda: (_link.wake(address), done.set()), daemon=True)
    waker.start()
    assert done.wait(timeout=30)  # nobody accepts any more: it still returns
    listener.close()
