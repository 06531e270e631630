"""Each site's Flower ClientApp: it forwards a round to its site process, masked by SecAgg+.

A ClientApp process holds no data and no key: it asks its site process for the round over
the local link and hands the site's weights to Flower's ``secaggplus_mod``, which masks
them before anything leaves the site. Flower starts one such process per message (four per
SecAgg+ round), so this file imports only NumPy, Flower and :mod:`._wire`, never privml:
:func:`privml.federated._deploy.submit` ships both files in the Flower app bundle as the
top-level modules ``privml_client_app`` and ``privml_wire``, and the app names
``privml_client_app:client_app``. Inside privml the same file is
``privml.federated._client_app``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

try:  # inside privml
    from . import _wire
except ImportError:  # in the Flower app bundle, beside its copy of _wire.py
    import privml_wire as _wire  # type: ignore[no-redef,unused-ignore]

# flwr's own imports warn of click and typer deprecations that are not ours to fix; the
# filter is scoped to these imports and leaves the caller's warning filters as they were.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, Scalar

__all__ = ["LINK_KEY", "SHARE_KEYS", "client_app", "plain_client_app"]

#: The node-config key naming the file where a site process wrote its link address.
LINK_KEY = "privml-link"

#: What a statistic's request carries from the run config to each site.
SHARE_KEYS = ("statistic", "epsilon", "sites", "column")


class _SiteClient(NumPyClient):  # type: ignore[misc,unused-ignore]
    """Forwards a round to the site process; every site weighs 1 (an unweighted FedAvg)."""

    def __init__(self, host: str, port: int, key: bytes) -> None:
        self.address = (host, port, key)

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Scalar]
    ) -> tuple[list[np.ndarray], int, dict[str, Scalar]]:
        if config.get("task") == "statistic":
            request: dict[str, Any] = {"op": "share", **{k: config[k] for k in SHARE_KEYS}}
            header, arrays = _wire.call(*self.address, request)
            if "error" not in header:  # scaled into SecAgg+'s clipping range (public scale)
                arrays = [arrays[0] / float(config["scale"])]
        else:
            request = {
                "op": "fit",
                "round": int(config.get("round", 0)),
                "rounds": int(config.get("rounds", 0)),  # the planned rounds, reserved at once
            }
            header, arrays = _wire.call(*self.address, request, parameters)
        if "error" in header:  # the site stopped (e.g. its budget): the server sees why
            raise RuntimeError(f"site refused the round: {header['error']}")
        return arrays, 1, {}


def _client_fn(context: Context) -> Any:
    try:
        address = _wire.read_address(str(context.node_config[LINK_KEY]))
    except (OSError, ValueError, KeyError) as error:
        raise RuntimeError(
            f"cannot read the site link file ({type(error).__name__}); start the site with "
            "`privml federated site`, which starts its SuperNode with the file's path"
        ) from error
    return _SiteClient(*address).to_client()


client_app = ClientApp(client_fn=_client_fn, mods=[secaggplus_mod])
#: The same without SecAgg+: sends unmasked weights (benchmarks' baseline only). A site's
#: DP guarantee does not depend on which one runs: the site process trains and charges.
plain_client_app = ClientApp(client_fn=_client_fn)
