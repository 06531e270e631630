"""The analyst's side: :func:`connect` returns a session with :class:`privml.Session`'s methods.

Nothing here holds or sees the vault key: requests go to a curator server
(``privml serve``) with a bearer token; answers come back as Arrow frames, DP
results and DP models, refusals as the same privml exceptions with the same
figures. Every release carries a request id made here; a retry (after a
timeout, a dropped connection or a server restart) sends the same id and gets
the same answer, charged once.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from .._optional import require
from ..accounting.filter import Accounting
from ..accounting.records import BudgetStatus, Share
from ..dp._result import DPResult
from ..exceptions import ConfigurationError
from ._errors import ServiceError
from ._problems import from_problem
from ._wire import ARROW, frame_from_ipc, plain_from_json, result_from_json, where_to_json

if TYPE_CHECKING:
    import httpx

    from ._client_groupby import RemoteGroupBy
    from ._reports import RemotePrivacyReport

__all__ = ["RemoteDP", "RemoteHE", "RemoteOversight", "RemoteSession", "connect"]

#: Statuses after which a request is sent again with the same request id.
_RETRY_STATUS = frozenset({502, 503, 504})


def connect(
    url: str,
    *,
    token: str | None = None,
    purpose: str,
    verify: bool | str | os.PathLike[str] = True,
    timeout: float = 120.0,
    retries: int = 3,
) -> RemoteSession:
    """Connect to a curator server as the token's principal, acting for ``purpose``.

    Parameters
    ----------
    url : str
        The server, e.g. ``"https://vault.example.org:8750"``.
    token : str, optional
        A token from the vault owner (``privml token issue``); by default the
        ``PRIVML_TOKEN`` environment variable.
    purpose : str
        The purpose every request acts for (one of the token's purposes).
    verify : bool or path
        Check the server's TLS certificate (True), against this CA bundle (a
        path), or not at all (False: only for a test server you started).
    timeout : float
        Seconds to wait for an answer (server-side DP-SGD runs take longer: raise it).
    retries : int
        How many times a request is sent again after a dropped connection or a 502/503/504.

    Returns
    -------
    RemoteSession
        Checked: the token and purpose were accepted (:class:`~privml.AuthenticationError`
        or :class:`~privml.AccessDenied` otherwise).
    """
    httpx = require("httpx", feature="privml.connect", extra="client")
    secret = token if token is not None else os.environ.get("PRIVML_TOKEN")
    if not secret:
        raise ConfigurationError("give token= (from privml token issue) or set PRIVML_TOKEN")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigurationError("retries= must be a non-negative integer")
    client = httpx.Client(
        base_url=url.rstrip("/"),
        headers={"Authorization": f"Bearer {secret}", "Privml-Purpose": purpose},
        verify=_tls(verify),
        timeout=timeout,
    )
    session = RemoteSession(client, retries=retries)
    try:
        session._info = session._json("GET", "/v1/session")
    except BaseException:
        client.close()
        raise
    return session


class RemoteSession:
    """A session served by a curator server: :class:`privml.Session`'s methods, no key.

    Make one with :func:`privml.connect`. ``read``, ``dp``, ``he``, ``budget``,
    ``explain`` and ``privacy_report`` take the arguments of the in-process session
    and raise the same exceptions; ``dp.fit`` sends the estimator's class and
    parameters, and ``dp.train`` takes a declared network
    (:mod:`privml.dp.torch._declared`).
    """

    def __init__(self, client: httpx.Client, *, retries: int = 3) -> None:
        self._client = client
        self._retries = retries
        self._info: dict[str, Any] = {}

    @property
    def principal(self) -> str:
        """Who the token acts as."""
        return str(self._info["principal"])

    @property
    def purpose(self) -> str:
        """The purpose every request acts for."""
        return str(self._info["purpose"])

    def __repr__(self) -> str:
        return (
            f"<privml.RemoteSession {self._client.base_url} principal={self.principal!r} "
            f"purpose={self.purpose!r}>"
        )

    def close(self) -> None:
        """Close the connection."""
        self._client.close()

    def __enter__(self) -> RemoteSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dp(self) -> RemoteDP:
        """DP statistics and models, computed by the server (:class:`RemoteDP`)."""
        return RemoteDP(self)

    @property
    def he(self) -> RemoteHE:
        """Encrypted inference with the server's models (:class:`RemoteHE`)."""
        return RemoteHE(self)

    @property
    def oversight(self) -> RemoteOversight:
        """Read-only budgets, ledgers and the audit check, for a token with ``dpo=True``."""
        return RemoteOversight(self)

    # -- the session's own methods ------------------------------------------------------
    def read(
        self,
        dataset: str,
        *,
        columns: Sequence[str] | None = None,
        version: int | None = None,
        where: Sequence[Any] | None = None,
    ) -> pd.DataFrame:
        """The columns this principal may see, each in its decided mode (see Session.read).

        Large reads arrive in pages of the server's ``max_rows``, all from one version.
        """
        body: dict[str, Any] = {
            "columns": None if columns is None else list(columns),
            "version": version,
            "where": where_to_json(where),
            "offset": 0,
        }
        pages: list[pd.DataFrame] = []
        while True:
            response = self._send("POST", f"/v1/datasets/{_part(dataset)}/read", json=body)
            if response.headers.get("content-type", "").split(";")[0] != ARROW:
                raise ServiceError("the server did not send an Arrow stream", status=502,
                                   kind="protocol")  # fmt: skip
            pages.append(frame_from_ipc(response.content))
            following = response.headers.get("Privml-Next-Offset")
            if following is None:
                break
            body["offset"] = int(following)
            body["version"] = int(response.headers["Privml-Version"])
        frame = pages[0] if len(pages) == 1 else pd.concat(pages, ignore_index=True)
        frame.attrs = dict(pages[0].attrs)
        return frame

    def budget(self, dataset: str) -> BudgetStatus:
        """The dataset's budget with this principal's and purpose's shares (see Session.budget)."""
        return _budget(self._json("GET", f"/v1/datasets/{_part(dataset)}/budget"))

    def explain(self, dataset: str) -> pd.DataFrame:
        """What this session gets from each column, and why (see Session.explain)."""
        rows = self._json("GET", f"/v1/datasets/{_part(dataset)}/explain")
        return pd.DataFrame(rows, columns=["column", "tags", "mode", "grants", "row_filter"])

    def privacy_report(
        self,
        name: str,
        *,
        version: int | None = None,
        attacks: Sequence[str] = ("loss-threshold", "lira-offline"),
        delta: float | None = None,
        confidence: float = 0.95,
        random_state: int = 0,
        references: int = 4,
    ) -> RemotePrivacyReport:
        """Attack a registered model on the server; its figures and verdict (see
        Session.privacy_report).

        Needs ``raw`` on every column the model uses, on every row. Charges no
        budget. Raises :class:`~privml.exceptions.PrivacyAuditFailure` (its
        ``report`` holding the figures) when an attack proves more than the
        model's claimed ε. The report has no ROC curves: ``plot()`` is not
        available; ``to_frame()``, ``str()`` and ``to_dict()`` are. Reference
        models are refitted on the server: raise ``connect(timeout=...)`` for
        large models.
        """
        from ._reports import report_from_json

        body = {
            "version": version,
            "attacks": [attacks] if isinstance(attacks, str) else list(attacks),
            "delta": delta,
            "confidence": confidence,
            "random_state": random_state,
            "references": references,
        }
        path = f"/v1/models/{_part(name)}/privacy-report"
        return report_from_json(self._json("POST", path, json=body))

    # -- the wire -------------------------------------------------------------------------
    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _send(self, method: str, path: str, *, key: str | None = None, **kwargs: Any) -> Any:
        """Send a request, again after a dropped connection or a 502/503/504; raise refusals."""
        import httpx

        headers = {"Idempotency-Key": key} if key is not None else {}
        attempt = 0
        while True:
            try:
                response = self._client.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as err:
                if _unverified(err):  # no retry fixes a certificate the client does not trust
                    raise ServiceError(
                        f"the TLS certificate of {self._client.base_url} could not be verified "
                        "against the trusted CAs: connect with verify= naming the CA bundle "
                        "that signed it (a PEM file from the server's operator)",
                        status=502,
                        kind="unavailable",
                    ) from None
                if attempt >= self._retries:
                    raise ServiceError(
                        f"no answer from {self._client.base_url} after {attempt + 1} attempts "
                        f"({type(err).__name__}); retry later"
                        + (f" with request id {key!r}" if key else ""),
                        status=504,
                        kind="unavailable",
                    ) from None
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in _RETRY_STATUS or attempt >= self._retries:
                    raise _refusal(response)
            attempt += 1
            time.sleep(min(8.0, 0.25 * 2**attempt))


class RemoteDP:
    """``session.dp`` on a server: each release is charged there before any value is read."""

    def __init__(self, session: RemoteSession) -> None:
        self._session = session

    def _release(self, dataset: str, statistic: str, body: dict[str, Any]) -> DPResult:
        body["where"] = where_to_json(body.get("where"))
        response = self._session._send(
            "POST", f"/v1/datasets/{_part(dataset)}/dp/{statistic}", json=body, key=_key()
        )
        return result_from_json(response.json())

    def count(
        self, dataset: str, *, epsilon: float, where: Sequence[Any] | None = None
    ) -> DPResult:
        """Number of rows (meeting ``where``), with Laplace noise (see DPSession.count)."""
        return self._release(dataset, "count", {"epsilon": epsilon, "where": where})

    def sum(
        self, dataset: str, column: str, *, epsilon: float, where: Sequence[Any] | None = None
    ) -> DPResult:
        """Clipped sum of ``column`` with Laplace noise (see DPSession.sum)."""
        return self._release(dataset, "sum", {"column": column, "epsilon": epsilon, "where": where})

    def mean(
        self, dataset: str, column: str, *, epsilon: float, where: Sequence[Any] | None = None
    ) -> DPResult:
        """Mean of ``column`` (clipped) (see DPSession.mean)."""
        return self._release(
            dataset, "mean", {"column": column, "epsilon": epsilon, "where": where}
        )

    def var(
        self, dataset: str, column: str, *, epsilon: float, where: Sequence[Any] | None = None
    ) -> DPResult:
        """Variance of ``column`` (clipped) (see DPSession.var)."""
        return self._release(dataset, "var", {"column": column, "epsilon": epsilon, "where": where})

    def std(
        self, dataset: str, column: str, *, epsilon: float, where: Sequence[Any] | None = None
    ) -> DPResult:
        """Standard deviation of ``column`` (see DPSession.std)."""
        return self._release(dataset, "std", {"column": column, "epsilon": epsilon, "where": where})

    def histogram(
        self,
        dataset: str,
        column: str,
        *,
        epsilon: float,
        bins: int | Sequence[float] | None = None,
        where: Sequence[Any] | None = None,
    ) -> DPResult:
        """Noisy counts per category or bin (see DPSession.histogram)."""
        body = {
            "column": column,
            "epsilon": epsilon,
            "bins": bins if bins is None or isinstance(bins, int) else [float(b) for b in bins],
            "where": where,
        }
        return self._release(dataset, "histogram", body)

    def quantile(self, dataset: str, column: str, q: float, *, epsilon: float) -> DPResult:
        """The ``q``-quantile of ``column`` (see DPSession.quantile)."""
        return self._release(dataset, "quantile", {"column": column, "q": q, "epsilon": epsilon})

    def groupby(
        self,
        dataset: str,
        *,
        by: str | Sequence[str],
        where: Sequence[Any] | None = None,
        keys: str = "auto",
        max_groups_per_unit: int | None = None,
    ) -> RemoteGroupBy:
        """DP statistics per group, computed and charged on the server (see DPSession.groupby)."""
        from ._client_groupby import RemoteGroupBy

        return RemoteGroupBy(
            self._session,
            f"/v1/datasets/{_part(dataset)}/dp/groupby",
            {
                "by": [by] if isinstance(by, str) else list(by),
                "where": where_to_json(where),
                "keys": keys,
                "max_groups_per_unit": max_groups_per_unit,
            },
        )

    def fit(
        self,
        estimator: Any,
        dataset: str,
        *,
        features: Sequence[str],
        target: str | None = None,
        name: str | None = None,
        holdout: float = 0.0,
    ) -> Any:
        """Fit a diffprivlib estimator on the server; return the fitted DP model.

        Only the estimator's class name and parameters are sent (the server
        accepts an allowlist of diffprivlib classes), never the object itself.
        ``holdout=h`` (0 to 0.5, with ``name``) keeps a random share of the rows
        out of training and records which, for a privacy report (see DPSession.fit).
        """
        from ..attacks._holdout import check_holdout
        from ..dp._declared_estimators import fitted_from_wire

        body = {
            "estimator": type(estimator).__name__,
            "params": _params(estimator),
            "features": list(features),
            "target": target,
            "name": name,
            "holdout": check_holdout(holdout),
        }
        response = self._session._send(
            "POST", f"/v1/datasets/{_part(dataset)}/dp/fit", json=body, key=_key()
        )
        return fitted_from_wire(response.json()["model"])

    def train(self, dataset: str, **spec: Any) -> tuple[Any, pd.DataFrame]:
        """Train a declared network with DP-SGD on the server; return (model, history).

        ``spec`` holds the keywords of :class:`privml.dp.torch._declared.TrainingRequest`:
        ``module`` as data (``{"layers": [...]}``), ``optimizer`` as data, and
        the DP-SGD settings. The model is a :class:`~privml.dp.torch.TorchModel`
        (``predict`` takes raw feature values) with the DP weights, in eval mode;
        the history has one row per epoch: steps and ε so far (the loss is not DP
        and stays on the server). ``canaries=m`` and ``holdout=h`` are dp.train's:
        ``history.attrs["canary_measurement"]`` then holds the run's canary counts
        and ε lower bounds, and the registered model records its held-out rows.
        """
        from ..dp._declared_estimators import scaler_from_wire
        from ..dp._training_spec import _canary_count, _holdout
        from ..dp.torch import TorchModel
        from ..dp.torch._declared import TrainingRequest, rebuild

        options = {
            "canaries": _canary_count(spec.pop("canaries", 0)),
            "holdout": _holdout(spec.pop("holdout", 0.0)),
        }
        request = TrainingRequest.parse(spec)  # refused here before anything is sent
        response = self._session._send(
            "POST",
            f"/v1/datasets/{_part(dataset)}/dp/train",
            json={"spec": spec, **options},
            key=_key(),
        )
        out = response.json()
        bounds = out.get("target_bounds")
        model = TorchModel(
            module=rebuild(request.raw["module"], base64.b64decode(out["weights"])),
            scaler=scaler_from_wire(out["scaler"]),
            features=list(request.features),
            target=request.target,
            task="classification" if out.get("classes") is not None else "regression",
            classes=out.get("classes"),
            target_bounds=None if bounds is None else (float(bounds[0]), float(bounds[1])),
        )
        history = pd.DataFrame(out["history"])
        history.attrs.update(
            epsilon=out["epsilon"],
            delta=out["delta"],
            model=out["model"],
            version=out["version"],
            canary_measurement=plain_from_json(out.get("canary_measurement")),
        )
        return model, history


class RemoteHE:
    """``session.he`` on a server: your secret key stays with you."""

    def __init__(self, session: RemoteSession) -> None:
        self._session = session

    def spec(self, model_name: str, *, version: int | None = None) -> bytes:
        """The public spec to make keys for (``privml.he.HEClient.for_model(spec)``)."""
        params = {} if version is None else {"version": version}
        path = f"/v1/models/{_part(model_name)}/he/spec"
        return bytes(self._session._send("GET", path, params=params).content)

    def predict(
        self,
        model_name: str,
        encrypted_batch: bytes,
        *,
        public_context: bytes,
        version: int | None = None,
    ) -> bytes:
        """Score an encrypted batch on the server; return the encrypted result."""
        body = {
            "batch": base64.b64encode(encrypted_batch).decode(),
            "public_context": base64.b64encode(public_context).decode(),
            "version": version,
        }
        path = f"/v1/models/{_part(model_name)}/he/predict"
        return bytes(self._session._send("POST", path, json=body).content)


class RemoteOversight:
    """Read-only oversight for a data-protection officer (a token issued with ``dpo=True``)."""

    def __init__(self, session: RemoteSession) -> None:
        self._session = session

    def budgets(self) -> list[BudgetStatus]:
        """Every dataset's budget, with every principal's and purpose's share."""
        return [_budget(b) for b in self._session._json("GET", "/v1/oversight/budgets")]

    def ledger(self, dataset: str) -> pd.DataFrame:
        """Every ledger row of ``dataset``, oldest first."""
        rows = self._session._json("GET", f"/v1/oversight/datasets/{_part(dataset)}/ledger")
        return pd.DataFrame(rows)

    def verify_audit(self) -> dict[str, Any]:
        """The server's verification of its whole audit log: ``ok``, summary, problems."""
        report: dict[str, Any] = self._session._json("GET", "/v1/oversight/audit/verify")
        return report


def _tls(verify: bool | str | os.PathLike[str]) -> Any:
    """What httpx takes for ``verify=``: True, False, or a context trusting a CA bundle."""
    if isinstance(verify, bool):
        return verify
    if isinstance(verify, str | os.PathLike):
        import ssl

        try:
            return ssl.create_default_context(cafile=os.fspath(verify))
        except (OSError, ssl.SSLError) as err:
            raise ConfigurationError(
                f"verify= names no readable CA bundle (PEM): {os.fspath(verify)!r} "
                f"({type(err).__name__})"
            ) from None
    raise ConfigurationError("verify= takes True, False or the path of a CA bundle (PEM)")


def _unverified(err: BaseException) -> bool:
    """Whether a connection failed because the server's certificate was not trusted."""
    import ssl

    seen: BaseException | None = err
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(err)


def _refusal(response: Any) -> Exception:
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        body = None
    err = from_problem(response.status_code, body)
    if isinstance(err, ServiceError) and err.retry_after is None:
        after = response.headers.get("Retry-After")
        err.retry_after = float(after) if after and after.isdigit() else None
    return err


def _key() -> str:
    """A fresh request id for one release (sent again, unchanged, on each retry)."""
    return uuid.uuid4().hex


def _part(name: str) -> str:
    """``name`` as one path segment: refused if it could leave it."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ConfigurationError(f"not a usable name: {name!r}")
    from urllib.parse import quote

    return quote(name, safe="")


def _params(estimator: Any) -> dict[str, Any]:
    get = getattr(estimator, "get_params", None)
    if get is None:
        raise ConfigurationError(
            "dp.fit takes a diffprivlib estimator (its class and parameters are sent)"
        )
    # only what the caller set: the server fills bounds, norms and classes from the schema
    try:
        defaults = type(estimator)().get_params(deep=False)
    except TypeError:
        defaults = {}
    params = {
        k: v
        for k, v in get(deep=False).items()
        if k != "accountant" and not (k in defaults and _same(defaults[k], v))
    }
    sendable: dict[str, Any] = json.loads(json.dumps(params, default=_plain))
    return sendable


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a is b or (type(a) is type(b) and a == b))
    except (TypeError, ValueError):  # arrays compare elementwise
        return False


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise ConfigurationError(
        f"an estimator parameter of type {type(value).__name__} cannot be sent to the server"
    )


def _budget(body: Mapping[str, Any]) -> BudgetStatus:
    """The :class:`~privml.BudgetStatus` a server sent (its ``to_dict``; ∞ came as None)."""
    acc = dict(body["accounting"])
    acc.pop("admission", None)
    accounting = Accounting(**acc)

    def share(d: Mapping[str, Any]) -> Share:
        return Share(**d)

    inf = float("inf")
    return BudgetStatus(
        dataset=body["dataset"],
        epsilon_spent=_inf(body["epsilon_spent"], inf),
        epsilon_total=_inf(body["epsilon_total"], inf),
        delta=body["delta"],
        remaining=_inf(body["remaining"], inf),
        method=body["method"],
        accounting=accounting,
        epsilon_naive=_inf(body["epsilon_naive"], inf),
        committed=body["committed"],
        reserved=body["reserved"],
        released=body["released"],
        by_principal={k: share(v) for k, v in body["by_principal"].items()},
        by_purpose={k: share(v) for k, v in body["by_purpose"].items()},
        privacy_unit=str(body.get("privacy_unit", "row")),
        max_rows_per_unit=int(body.get("max_rows_per_unit", 1)),
    )


def _inf(value: Any, default: float) -> float:
    return default if value is None else float(value)
