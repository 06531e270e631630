"""``python -m privml demo``: the vault on a real dataset, in a few readable lines."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from .accounting.budget import Budget
from .crypto.keys import generate_key
from .datasets import diabetes_schema, load_diabetes
from .exceptions import AccessDenied
from .vault import Vault

__all__ = ["run_demo"]


def run_demo(say: Callable[[str], None]) -> None:
    """Create a vault in a temporary folder, store, read, audit and tamper-check."""
    with tempfile.TemporaryDirectory(prefix="privml-demo-") as tmp:
        folder = Path(tmp) / "clinic.vault"
        key = generate_key()
        say(f"privml demo: a vault in {folder}")
        frame = load_diabetes()
        with Vault.create(folder, key=key, actor="demo-admin") as vault:
            say("  created it: meta.db (SQLite) + encrypted Parquet, key from generate_key()")
            version = vault.add_dataset(
                "diabetes",
                frame,
                schema=diabetes_schema(),
                budget=Budget(epsilon=3.0, delta=1e-6),
                privacy_unit="row",
            )
            encrypted = len(vault.dataset("diabetes").schema.sensitive)
            say(
                f"  registered 'diabetes' v{version.version}: {version.rows} rows x "
                f"{frame.shape[1]} columns, {encrypted} encrypted at rest, budget ε=3 δ=1e-6"
            )
            needles = [frame["patient"].iloc[0].encode(), b"DB-00441"]
            hits = [
                p.name
                for p in folder.rglob("*")
                if p.is_file() and any(n in p.read_bytes() for n in needles)
            ]
            say(f"  scanned every file in the vault for patient numbers: {len(hits)} found")
            vault.add_purpose("care", description="Treating patients", lawful_basis="GDPR 9(2)(h)")
            vault.add_principal("dr.lee", roles=["clinician"])
            vault.grant(role="clinician", dataset="diabetes", purpose="care", mode="raw")
            vault.add_principal("intern", roles=["student"])
            vault.grant(role="student", dataset="diabetes", purpose="care", mode="dp_aggregate")
            say("  policy: clinicians read 'diabetes' in clear for 'care'; students get DP only")
            back = vault.session("dr.lee", purpose="care").read("diabetes")
            clear = back.drop(columns="patient")
            same = clear.equals(frame[clear.columns].astype(clear.dtypes))
            say(
                f"  dr.lee read it back for 'care': {len(back)} rows, values identical: {same}; "
                f"patient numbers come back as pseudonyms ({back['patient'].iloc[0][:12]}...)"
            )
            try:
                vault.session("intern", purpose="care").read("diabetes", columns=["bmi"])
            except AccessDenied as refused:
                say(
                    f"  intern asked for 'bmi' and was refused: mode {refused.mode!r}, "
                    f"reading values needs {refused.needed!r}"
                )
            mean = vault.session("intern", purpose="care").dp.mean("diabetes", "bmi", epsilon=0.5)
            low, high = mean.interval or (float("nan"), float("nan"))
            say(
                f"  intern's DP mean of 'bmi' instead: {mean.value:.2f} (noise within "
                f"[{low:+.2f}, {high:+.2f}] at 95%), ε=0.5 charged before any row was read; "
                f"ε={vault.budget('diabetes').remaining:.2f} of 3 left"
            )
        with Vault.open(folder, key=key) as vault:
            say("  the audit log:")
            for row in vault.audit.entries().itertuples():
                where = row.dataset if isinstance(row.dataset, str) else ""
                where += f" v{row.version}" if where and not pd.isna(row.version) else ""
                say(
                    f"    {row.seq:>3}  {row.action:<21} {row.principal:<11} {row.purpose:<15}"
                    f"{row.outcome:<7} {where}"
                )
            say(f"  verify(): {vault.audit.verify()}")
        copy = Path(tmp) / "tampered.vault"
        shutil.copytree(folder, copy)
        with sqlite3.connect(copy / "meta.db") as con:
            con.execute("UPDATE audit_log SET principal = 'someone-else' WHERE seq = 3")
        with Vault.open(copy, key=key) as vault:
            say(f"  after editing entry 3 of a copy with sqlite3: {vault.audit.verify()}")
