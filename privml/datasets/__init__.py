"""Small public datasets shipped with privml, so tutorials run without downloads.

``load_adult`` returns the UCI "Adult" census extract (48,842 people);
``load_diabetes`` scikit-learn's diabetes data in original units, with
``diabetes_schema`` declaring its domain bounds.

Attribution: Becker, B. and Kohavi, R. (1996). *Adult* [Dataset]. UCI Machine
Learning Repository. https://doi.org/10.24432/C5XW20. Licensed under Creative
Commons Attribution 4.0 International (CC BY 4.0). The copy in this folder
(``adult.csv.gz``) holds both original files, ``adult.data`` (split
``"train"``) and ``adult.test`` (split ``"test"``), unchanged except that
spaces after the separators were removed, the test file's comment line was
dropped, the trailing ``"."`` of its income labels was removed, and a
``split`` column was added. Missing values stay as the original ``"?"``.
"""

from __future__ import annotations

from ._load import ADULT_CATEGORICAL, ADULT_NUMERIC, diabetes_schema, load_adult, load_diabetes

__all__ = ["ADULT_CATEGORICAL", "ADULT_NUMERIC", "diabetes_schema", "load_adult", "load_diabetes"]
