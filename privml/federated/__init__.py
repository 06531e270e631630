"""Federated DP-SGD across vaults, with Flower's SecAgg+ secure aggregation.

A **site** is a vault: :class:`Site` trains through a :class:`~privml.Session` of that
vault with one ``session.dp.private_training`` run for the whole federated run (reserved
in the site's own ledger before round 1, each round's global model loaded into it with
``run.load_global``, settled on the batches drawn, audited there). The **server** runs
FedAvg under Flower's SecAgg+ workflow, so it only ever receives the masked updates and
their sum. The same sites answer joint DP
statistics (count, sum, mean): each adds its share of the Laplace noise, charged in its
own ledger, and only the sum of the shares (full noise) is unmasked. Both run on
Flower's deployment engine: a SuperLink (``privml federated server``) and one SuperNode
per site (``privml federated site``), separate processes.

Install with ``pip install 'privml[federated]'``. The files::

    _model.py       ModelSpec: the network every party builds the same way
    _wire.py        the link's messages and client side (imports nothing from privml)
    _link.py        the local, authenticated link between a site's ClientApp processes and it
    _site.py        Site: one vault's rounds, one private_training run reserved before round 1
    _client_app.py  each site's Flower ClientApp (secaggplus_mod), shipped in the app bundle
    _apps.py        Flower's ServerApp (FedAvg under SecAgg+)
    _deploy.py      SuperLink, SuperNodes and `flwr run` as processes
    _statistics.py  joint DP count/sum/mean: each site's Laplace noise share, and their sum
    _federation.py  run_rounds, run_statistic: the server's side of a run, and its result
    _cli.py         privml federated server|site
"""

from ._federation import FederatedResult, JointStatistic, run_rounds, run_statistic
from ._model import ModelSpec
from ._site import RoundRecord, Site
from ._statistics import StatisticShare, combine, laplace_share, share

__all__ = [
    "FederatedResult",
    "JointStatistic",
    "ModelSpec",
    "RoundRecord",
    "Site",
    "StatisticShare",
    "combine",
    "laplace_share",
    "run_rounds",
    "run_statistic",
    "share",
]
