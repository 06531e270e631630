"""Access policy, pure: who may see which columns of a dataset, for which purpose, in which mode.

Nothing here touches storage. :mod:`privml.policy._model` decides a request from a set
of grants; :mod:`privml.policy._grants` checks a grant against the registered
principals, purposes and schemas before it is stored; :mod:`privml.policy._yaml`
reads and writes a whole policy as YAML, and :mod:`privml.policy._diff` works out
what loading a document changes (grants kept, added, revoked). The vault keeps the grants
(:mod:`privml.vault._policy_store`) and asks the compiled :class:`PolicyModel`
before any data leaves.
"""

from ._model import MODES, ColumnDecision, Grant, PolicyModel, Predicate, mode_allows

__all__ = ["MODES", "ColumnDecision", "Grant", "PolicyModel", "Predicate", "mode_allows"]
