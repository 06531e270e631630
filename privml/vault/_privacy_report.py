"""``vault.models.privacy_report`` and ``session.privacy_report``: attack a registered model.

The report reads the model's member rows and held-out rows of the same dataset
version (from the membership record its training wrote, see
:mod:`privml.attacks._holdout`), attacks the model, and puts the ε lower bounds
beside the ledger's claim (:class:`privml.attacks.PrivacyReport`).

Why it charges no budget: its output (losses, ROC curves, bounds, accuracies)
is computed from the member rows themselves, and it goes only to a party that
may already read those rows raw — the vault owner (key holder), or a session
whose policy grants ``raw`` on every column the model uses, on every row. Such
a party could compute all of it from a raw read; a DP charge would protect
nothing. Reference models are refitted with the trusted party and discarded.
Every report writes one audit entry with its figures (never row values).
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._canonical import canonical_json
from ..attacks._bounds import check_confidence, check_delta
from ..attacks._holdout import Membership
from ..attacks._references import reference_fitter
from ..attacks._report import (
    MAX_REPORT_REFERENCES,
    PrivacyReport,
    check_attacks,
    measure,
    score,
    subsample,
)
from ..attacks._scores import is_classifier
from ..audit import ADMIN_PURPOSE
from ..exceptions import ConfigurationError, IntegrityError, PrivacyAuditFailure, PrivmlError
from ..storage.engine import transaction

if TYPE_CHECKING:
    from .._records import ModelInfo
    from ._datasets import DatasetStore
    from ._door import Door
    from ._models import ModelRegistry

__all__ = ["ACTION", "owner_report", "session_report"]

#: The audit action of a report.
ACTION = "model.privacy_report"


class _Options:
    """The report's arguments, checked before any data is read."""

    def __init__(
        self,
        attacks: Any,
        delta: Any,
        confidence: Any,
        random_state: Any,
        references: Any,
    ) -> None:
        self.attacks = check_attacks(attacks)
        self.delta = None if delta is None else check_delta(delta)
        self.confidence = check_confidence(confidence)
        if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral):
            raise ConfigurationError("random_state must be an int (reports are seeded)")
        self.random_state = int(random_state)
        if (
            isinstance(references, bool)
            or not isinstance(references, numbers.Integral)
            or not 2 <= int(references) <= MAX_REPORT_REFERENCES
        ):
            raise ConfigurationError(
                f"references must be a whole number from 2 to {MAX_REPORT_REFERENCES} "
                f"(LiRA's reference models, each a full refit), got {references!r}"
            )
        self.references = int(references)


def _attacked(
    registry: ModelRegistry, name: str, version: int | None
) -> tuple[ModelInfo, ModelInfo, str | None]:
    """The model's info, the info of the model to attack, and a note (HE: its plaintext twin).

    Both are resolved here, once, to fixed versions: everything after (the policy
    decision, the rows read, the model loaded) concerns exactly these two.
    """
    info = registry.info(name, version)
    if not str(info.metadata.get("class", "")).startswith("privml.he."):
        return info, info, None
    source = info.metadata.get("source_model")
    if not isinstance(source, dict) or not isinstance(source.get("name"), str):
        raise ConfigurationError(
            f"model {name!r} v{info.version} is an HE-compiled model and the registry does not "
            "record the plaintext model it was compiled from, so it cannot be attacked. Register "
            "it with extra={'source_model': {'name': ..., 'version': ...}}, or report on the "
            "plaintext model itself."
        )
    twin = registry.info(source["name"], source.get("version"))
    if twin.trained_on != info.trained_on:
        raise IntegrityError(
            f"HE model {name!r} v{info.version} names {twin.name!r} v{twin.version} as its "
            "plaintext source, but the two record different training data"
        )
    note = f"HE-compiled: attacked through its plaintext source model {twin.name} v{twin.version}"
    return info, twin, note


def _columns(info: ModelInfo, target: str | None) -> tuple[list[str], str]:
    features = info.metadata.get("features")
    target = target or info.metadata.get("target")
    if not isinstance(features, list) or not features or not isinstance(target, str):
        raise ConfigurationError(
            f"model {info.name!r} records no features and target: pass target= and "
            "members=/non_members= frames holding its features and the target"
        )
    return [str(f) for f in features], target


def _recorded(
    registry: ModelRegistry, store: DatasetStore, info: ModelInfo, columns: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Members and held-out rows of the version the model trained on, by its membership record."""
    record = registry._membership_record(info)
    if record is None or info.trained_on is None:
        raise ConfigurationError(
            f"model {info.name!r} v{info.version} has no record of which rows it trained on "
            "(it was registered by hand, or trained without holdout=). Train it with "
            "session.dp.fit(..., holdout=0.3) or session.dp.train(..., holdout=0.3), or, as "
            "the vault owner, pass members= and non_members= DataFrames explicitly."
        )
    membership = Membership.from_record(record)
    dataset, version = info.trained_on
    frame, _, _ = store.load(dataset, columns, version)
    if membership.rows > len(frame):
        raise IntegrityError(
            f"model {info.name!r}'s membership record spans {membership.rows} rows, but "
            f"{dataset!r} v{version} has {len(frame)}"
        )
    pad = np.zeros(len(frame) - membership.rows, dtype=bool)
    members = np.concatenate([membership.members, pad])
    held = np.concatenate([membership.held_out, pad])
    return (
        frame.loc[members].reset_index(drop=True),
        frame.loc[held].reset_index(drop=True),
    )


def _given(data: Any, what: str, columns: list[str]) -> pd.DataFrame:
    """The owner's ``members=`` / ``non_members=`` frame, checked; errors quote no value."""
    if not isinstance(data, pd.DataFrame):
        raise ConfigurationError(f"{what}= takes a pandas DataFrame, got {type(data).__name__}")
    if not data.columns.is_unique:
        raise ConfigurationError(f"{what} has repeated column names; give each column once")
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise ConfigurationError(f"{what} lacks the model's columns {missing}")
    frame = data[columns].reset_index(drop=True)
    empty = [c for c in columns if bool(frame[c].isna().any())]
    if empty:
        raise ConfigurationError(
            f"{what} has missing values (NaN/None) in columns {empty}: a report attacks "
            "complete rows only; drop or fill them first"
        )
    return frame


def _check_labels(model: Any, frame: pd.DataFrame, target: str, what: str) -> None:
    """Refuse target values a classifier does not know (counted, never quoted)."""
    classes = getattr(model, "classes_", None)
    if classes is None:
        classes = getattr(model, "classes", None) if getattr(model, "task", "") else None
    if classes is None or not is_classifier(model):
        return
    known = set(np.asarray(classes, dtype=object).tolist())
    unknown = int(sum(1 for v in frame[target].tolist() if v not in known))
    if unknown:
        raise ConfigurationError(
            f"{what} has {unknown} rows whose {target!r} is not one of the model's classes; "
            "give rows of the data the model was trained for"
        )


def _canaries(metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every canary measurement the model's training recorded, by its metadata key.

    A measurement is a dict holding ``epsilon_lower_bound``, found under a key
    naming canaries, either directly or one level down (DP-SGD records
    ``canary_measurement = {"black_box": {...}, "white_box": {...}}``, listed
    here as ``canary_measurement.black_box`` and ``canary_measurement.white_box``).
    """
    found: dict[str, dict[str, Any]] = {}
    for key, value in sorted(metadata.items()):
        if "canary" not in key or not isinstance(value, dict):
            continue
        if "epsilon_lower_bound" in value:
            found[key] = value
            continue
        for part, inner in sorted(value.items()):
            if isinstance(inner, dict) and "epsilon_lower_bound" in inner:
                found[f"{key}.{part}"] = inner
    return found


def _build(
    registry: ModelRegistry,
    store: DatasetStore,
    attacked: tuple[ModelInfo, ModelInfo, str | None],
    opts: _Options,
    *,
    principal: str,
    purpose: str,
    target: str | None = None,
    members: Any = None,
    non_members: Any = None,
) -> PrivacyReport:
    info, twin, note = attacked
    features, target = _columns(twin, target)
    columns = [*features, target]
    notes = [note] if note else []
    if (members is None) != (non_members is None):
        raise ConfigurationError("pass both members= and non_members=, or neither")
    model = registry._load(
        twin.name, twin.version, principal=principal, purpose=purpose, audit=False
    )
    if not callable(getattr(model, "predict", None)):
        raise ConfigurationError(
            f"model {twin.name!r} v{twin.version} is a {type(model).__name__}, which has no "
            "predict(): a report attacks models that predict rows (scikit-learn, diffprivlib, "
            "privml's DP-SGD models)"
        )
    if members is not None:
        inside = _given(members, "members", columns)
        outside = _given(non_members, "non_members", columns)
        notes.append("members and non-members given by the vault owner, not recorded provenance")
    else:
        inside, outside = _recorded(registry, store, twin, columns)
    rng = np.random.default_rng(opts.random_state)
    inside, sampled_in = subsample(inside, "members", rng)
    outside, sampled_out = subsample(outside, "non-members", rng)
    notes += [n for n in (sampled_in, sampled_out) if n]
    if len(inside) < 4 or len(outside) < 4:
        raise ConfigurationError(
            f"a report needs at least 4 members and 4 held-out rows; model {twin.name!r} has "
            f"{len(inside)} and {len(outside)}: train with a larger holdout= or more rows"
        )
    if members is not None:
        _check_labels(model, inside, target, "members")
        _check_labels(model, outside, target, "non_members")
    attacks = opts.attacks
    fit_reference = None
    if "lira-offline" in attacks:
        fit_reference, why = reference_fitter(model, random_state=opts.random_state)
        if fit_reference is None:
            attacks = tuple(a for a in attacks if a != "lira-offline")
            notes.append(f"lira-offline not run: {why}; only the loss-threshold attack ran")
            if not attacks:
                attacks = ("loss-threshold",)
    delta = opts.delta
    if delta is None:
        delta = twin.delta if twin.delta is not None and 0 < twin.delta < 1 else 1e-5
    try:
        metric, on_members = score(model, inside, target)
        _, on_held_out = score(model, outside, target)
        results = measure(
            model,
            inside,
            outside,
            target,
            attacks=attacks,
            fit_reference=fit_reference,
            references=opts.references,
            delta=delta,
            confidence=opts.confidence,
            random_state=opts.random_state,
        )
    except PrivmlError:
        raise
    except Exception as err:
        # A library's message may quote a row (a label, a value): say only what failed.
        raise PrivmlError(
            f"the privacy report on model {twin.name!r} v{twin.version} failed while scoring "
            f"or refitting it ({type(err).__name__}); check that the rows match the model's "
            "features and target"
        ) from None
    return PrivacyReport(
        model=info.name,
        model_version=info.version,
        dataset=twin.trained_on[0] if twin.trained_on else None,
        dataset_version=twin.trained_on[1] if twin.trained_on else None,
        epsilon_claimed=twin.epsilon,
        delta_claimed=twin.delta,
        delta=delta,
        confidence=opts.confidence,
        metric=metric,
        score_members=on_members,
        score_held_out=on_held_out,
        results=tuple(results),
        canaries=_canaries(twin.metadata),
        notes=tuple(notes),
    )


def _failure(report: PrivacyReport) -> PrivacyAuditFailure:
    figures = ", ".join(f"{n} proves ε ≥ {b:.3f}" for n, b in report.exceeded)
    return PrivacyAuditFailure(
        f"model {report.model!r} v{report.model_version} claims ε = {report.epsilon_claimed:g} "
        f"(δ = {report.delta:g}), but {figures} at {report.confidence:.0%} confidence. "
        f"{report.verdict}",
        report=report,
    )


def _details(report: PrivacyReport) -> dict[str, Any]:
    details = report.to_dict()
    canonical_json(details)  # figures only: JSON-able, or refused before the entry is written
    return details


def owner_report(
    registry: ModelRegistry,
    store: DatasetStore,
    name: str,
    version: int | None,
    *,
    attacks: Any,
    delta: Any,
    confidence: Any,
    random_state: Any,
    references: Any,
    target: str | None = None,
    members: Any = None,
    non_members: Any = None,
) -> PrivacyReport:
    """The vault owner's report (see :meth:`privml.vault._models.ModelRegistry.privacy_report`).

    A report that fails once the model is found (its rows, a reference fit, the
    scoring) is audited as an error, with the error's type only, before it raises.
    """
    opts = _Options(attacks, delta, confidence, random_state, references)
    actor = registry._state.actor
    attacked = _attacked(registry, name, version)
    info, twin, _ = attacked
    dataset, trained = twin.trained_on or (None, None)
    try:
        report = _build(
            registry,
            store,
            attacked,
            opts,
            principal=actor,
            purpose=ADMIN_PURPOSE,
            target=target,
            members=members,
            non_members=non_members,
        )
        details = _details(report)
    except Exception as err:
        _append(
            registry,
            actor,
            "error",
            dataset,
            trained,
            {"model": info.name, "model_version": info.version, "error": type(err).__name__},
        )
        raise
    outcome = "exceeded" if report.exceeded else "ok"
    _append(registry, actor, outcome, report.dataset, report.dataset_version, details)
    if report.exceeded:
        raise _failure(report)
    return report


def _append(
    registry: ModelRegistry,
    actor: str,
    outcome: str,
    dataset: str | None,
    version: int | None,
    details: dict[str, Any],
) -> None:
    with transaction(registry._state.engine) as tx:
        registry._audit.append(
            tx,
            principal=actor,
            purpose=ADMIN_PURPOSE,
            action=ACTION,
            outcome=outcome,
            dataset=dataset,
            version=version,
            details=details,
        )


def session_report(
    door: Door,
    name: str,
    version: int | None,
    *,
    attacks: Any,
    delta: Any,
    confidence: Any,
    random_state: Any,
    references: Any,
) -> PrivacyReport:
    """A session's report: needs ``raw`` on every column the model uses, on every row.

    The model (and an HE model's plaintext twin) is resolved once, to fixed
    versions: the policy is decided on the twin's training data, and exactly
    that twin is attacked, whatever is registered meanwhile.
    """
    opts = _Options(attacks, delta, confidence, random_state, references)
    attacked = _attacked(door._models, name, version)
    twin = attacked[1]
    if twin.trained_on is None:
        raise ConfigurationError(
            f"model {twin.name!r} records no training data; only the vault owner can report on it"
        )
    dataset, trained_version = twin.trained_on
    features, target = _columns(twin, None)
    auth = door.authorize(
        dataset, columns=[*features, target], needed="raw", action=ACTION, version=trained_version
    )
    if auth.rows_digest is not None:
        err = door._asker.denied(
            f"a privacy report reads every member row of model {twin.name!r}; your grants on "
            f"{dataset!r} filter rows: ask for raw access to every row, or ask the vault owner",
            dataset=dataset,
        )
        door._log.failure(
            ACTION, dataset, trained_version, err, auth.decisions, {"model": twin.name}
        )
        raise err
    with door.request(ACTION, dataset, version=trained_version):
        report = _build(
            door._models,
            door._store,
            attacked,
            opts,
            principal=door.principal,
            purpose=door.purpose,
        )
        details = {
            **_details(report),
            "grant_ids": auth.grant_ids,
            "policy_hash": auth.policy_hash,
        }
    door.record(
        ACTION,
        "exceeded" if report.exceeded else "ok",
        report.dataset,
        report.dataset_version,
        details,
    )
    if report.exceeded:
        raise _failure(report)
    return report
