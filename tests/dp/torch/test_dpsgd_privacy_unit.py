"""DP-SGD on a person-level dataset samples people: one row each, N = people, q = B / people."""

from __future__ import annotations

import pytest
import torch
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from sklearn.datasets import load_digits

from privml import Budget, Field, Schema, Vault

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

DELTA = 1e-5


def test_a_person_level_run_counts_people_and_is_charged_at_their_sampling_rate(
    tmp_path, key, make_mlp, train_loop
):
    frame = load_digits(as_frame=True).frame
    features = [c for c in frame.columns if c != "target"]
    people = (len(frame) + 2) // 3  # 1797 rows, three per person: 599 people
    frame = frame.assign(pid=[f"p{i // 3}" for i in range(len(frame))])
    fields = {c: Field.numeric(bounds=(0.0, 16.0)) for c in features}
    fields["target"] = Field.categorical(categories=list(range(10)), target=True)
    schema = Schema({**fields, "pid": Field.identifier()})
    with Vault.create(tmp_path / "v", key=key) as v:
        v.add_dataset(
            "data", frame, schema=schema, budget=Budget(epsilon=10, delta=DELTA),
            privacy_unit="pid", max_rows_per_unit=3,
        )  # fmt: skip
        v.add_purpose("ml", description="Model training", lawful_basis="GDPR 9(2)(j)")
        v.add_principal("eng", roles=["ml"])
        v.grant(
            role="ml",
            dataset="data",
            purpose="ml",
            mode="dp_training",
            columns=[*features, "target"],
        )
        net = make_mlp()
        with v.session("eng", purpose="ml").dp.private_training(
            "data", features=features, target="target", module=net,
            optimizer=torch.optim.SGD(net.parameters(), lr=0.5),
            batch_size=64, epochs=1, max_grad_norm=1.0, noise_multiplier=1.1,
        ) as run:  # fmt: skip
            train_loop(run, stop_after=5)
        q = 64 / people
        assert run.charge.event.params["n"] == people and run.sample_rate == q
        event = dp_event.SelfComposedDpEvent(
            dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(1.1)), 5
        )
        pld = PLDAccountant(value_discretization_interval=1e-4).compose(event).get_epsilon(DELTA)
        rdp = RdpAccountant().compose(event).get_epsilon(DELTA)
        assert v.budget("data").epsilon_fixed_sequence == pytest.approx(min(pld, rdp), rel=1e-6)
        assert v.budget("data").privacy_unit == "pid"
        info = v.models.info("data-dpsgd")
        assert info.metadata["privacy_unit"] == {"unit": "pid", "rows_per_unit_used": 1}
        entries = v.audit.entries()
        recorded = [d.get("privacy_unit") for d in entries["details"] if isinstance(d, dict)]
        assert {"unit": "pid", "max_rows_per_unit": 3, "rows_per_unit_used": 1} in recorded
