"""Data minimization: release only as much of each feature as a trained model needs.

GDPR's data-minimization principle asks to collect and keep only the personal
data a purpose needs. ``Minimizer`` takes a fitted model and finds the coarsest
version of its input features (age ranges instead of ages, groups of
occupations, features dropped, or per-cell representatives behind a few yes/no
questions) that keeps the model's predictions at or above a target agreement on
held-out rows, optionally with a k-anonymity floor. The result is plain JSON
(``Minimizer.to_dict``) that ``transform`` applies exactly.

Importing this subpackage imports scikit-learn; ``import privml`` does not.
"""

from ._minimizer import Minimizer

__all__ = ["Minimizer"]
