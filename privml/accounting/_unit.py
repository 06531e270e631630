"""A dataset's privacy unit: the neighbouring relation its ledger's ε is stated under.

Two datasets are neighbours when they differ by one privacy unit:

* ``"row"``: one row added or removed (every row belongs to a different person);
* an identifier column: every row of one value of that column (one person) added or
  removed, each person contributing at most ``max_rows`` rows to any release
  (the vault keeps a keyed random sample of at most ``max_rows`` rows per person
  before a mechanism runs, :mod:`privml.dp._bounding`).

The unit is declared with the dataset, stored in its authenticated metadata row
and never changes; every event charged to its ledger is at that unit.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_ROWS_PER_UNIT", "ROW", "PrivacyUnit"]

#: The largest ``max_rows_per_unit`` accepted: a pure-ε release at that bound is charged
#: ε but calibrated to ε / max_rows, so larger bounds make releases pure noise.
MAX_ROWS_PER_UNIT = 10_000


@dataclass(frozen=True)
class PrivacyUnit:
    """What one neighbouring step adds or removes: one row, or all rows of one person.

    Attributes
    ----------
    column : str or None
        The identifier column naming each row's person; None for a row-level unit.
    max_rows : int
        The most rows one unit contributes to a release (1 for a row-level unit).

    Examples
    --------
    >>> PrivacyUnit("patient", 40).name, PrivacyUnit().name
    ('patient', 'row')
    >>> print(PrivacyUnit("patient", 40))
    one person: all rows of one 'patient' value, at most 40 per release
    """

    column: str | None = None
    max_rows: int = 1

    @property
    def name(self) -> str:
        """``"row"`` or the unit column's name (how a dataset declares it)."""
        return "row" if self.column is None else self.column

    @property
    def is_row(self) -> bool:
        """True for the row-level unit."""
        return self.column is None

    @classmethod
    def stored(cls, unit: str | None, max_rows: int | None) -> PrivacyUnit:
        """The unit a metadata row records; a row from before units were stored is ``"row"``."""
        if unit is None or unit == "row":
            return ROW
        return cls(str(unit), int(max_rows or 1))

    def __str__(self) -> str:
        if self.column is None:
            return "one row"
        return (
            f"one person: all rows of one {self.column!r} value, "
            f"at most {self.max_rows} per release"
        )


#: The row-level unit: add/remove one row.
ROW = PrivacyUnit()
