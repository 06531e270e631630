"""Sessions: a principal acting for a purpose. The only way to data in a vault."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from ._datasets import DatasetStore

__all__ = ["Session"]


class Session:
    """A principal acting for a purpose. Make one with :meth:`privml.Vault.session`.

    Every request is written to the vault's audit log with the principal, the
    purpose, the dataset version and the outcome, whether it succeeds or fails.

    Access policies are not enforced yet: any principal may read any dataset.
    """

    def __init__(self, store: DatasetStore, *, principal: str, purpose: str) -> None:
        self._store = store
        self.principal = principal
        self.purpose = purpose

    def __repr__(self) -> str:
        return f"<privml.Session principal={self.principal!r} purpose={self.purpose!r}>"

    def read(
        self,
        dataset: str,
        columns: Sequence[str] | None = None,
        version: int | None = None,
    ) -> pd.DataFrame:
        """Read a dataset version (the latest by default) as a DataFrame.

        Identifier columns come back as their keyed pseudonyms; every other
        column comes back exactly as stored, in its schema's dtype.

        Parameters
        ----------
        dataset : str
            The dataset's name.
        columns : sequence of str, optional
            Only these columns (all by default).
        version : int, optional
            A version number (the latest by default).
        """
        if isinstance(columns, str):
            raise ConfigurationError("columns= takes a list of names, e.g. columns=['age']")
        return self._store.read(
            principal=self.principal,
            purpose=self.purpose,
            dataset=dataset,
            columns=list(columns) if columns is not None else None,
            version=version,
        )
