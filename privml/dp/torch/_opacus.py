"""Everything privml takes from Opacus, and the two Opacus internals it relies on.

:data:`USED` lists each Opacus object privml imports, with the members it
calls, overrides or hands keyword arguments to; :func:`problems` checks the
installed Opacus against it (at import, by :func:`check`, and in the tests).
All of it is Opacus's public API except two things with no public
equivalent, kept here with the reason for each:

* :func:`strip`: attributes Opacus leaves on the user's module and that no
  public method removes (``to_standard_module()`` removes the rest);
* :class:`GhostModule`: which of ghost clipping's two backward passes ran,
  read from the hook switch ``hooks_enabled`` that Opacus flips around the
  second pass.

:data:`TESTED` is the range of Opacus versions these were checked against;
``pyproject.toml``'s ``torch`` extra pins the same range.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from dataclasses import dataclass
from typing import Any

from opacus.grad_sample import GradSampleModuleFastGradientClipping
from torch import nn

from ...exceptions import OptionalDependencyError

__all__ = ["TESTED", "USED", "GhostModule", "Use", "check", "problems", "strip"]

#: Opacus versions tested: at least the first, below the second (pyproject: opacus>=1.5,<1.7).
TESTED = ((1, 5), (1, 7))

# DPOptimizer.__init__ sets ``p.summed_grad = None`` on every parameter and its zero_grad
# resets it to None; nothing in Opacus deletes it, and it would be pickled with the model.
PARAM_LEFTOVERS = ("summed_grad",)
# Opacus's forward hook appends each forward's inputs (training rows) to ``activations`` on
# every hooked layer and its backward hook pops them and sets ``max_batch_len``; a forward
# without its backward leaves both there, and ``to_standard_module()`` does not remove them.
MODULE_LEFTOVERS = ("activations", "max_batch_len")


@dataclass(frozen=True)
class Use:
    """One Opacus object privml uses: its import path, and per member the parameters relied on."""

    path: str
    members: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def resolve(self) -> Any:
        """The object itself (AttributeError or ImportError when Opacus no longer has it)."""
        module, _, name = self.path.rpartition(".")
        return getattr(importlib.import_module(module), name)


_STEP = (("pre_step", ("closure",)), ("step", ("closure",)), ("zero_grad", ("set_to_none",)))
_OPTIMIZER = (
    (
        "__init__",
        (
            "optimizer",
            "noise_multiplier",
            "max_grad_norm",
            "expected_batch_size",
            "loss_reduction",
            "generator",  # privml sets the attribute of that name before each step's noise
        ),
    ),
    *_STEP,
    ("signal_skip_step", ("do_skip",)),
    ("add_noise", ()),  # overridden: the white-box canaries join p.summed_grad before the noise
    ("scale_grad", ()),  # overridden: one division where the noise was added in one tensor
    ("attach_step_hook", ("fn",)),
    ("params", ()),
    ("defaults", ()),
)

#: Every Opacus object privml uses, with the members it calls, overrides or reads.
USED: tuple[Use, ...] = (
    Use(
        "opacus.grad_sample.GradSampleModule",
        (
            ("__init__", ("m", "batch_first", "loss_reduction")),
            ("forbid_grad_accumulation", ()),
            ("to_standard_module", ()),
        ),
    ),
    Use(
        "opacus.grad_sample.GradSampleModuleFastGradientClipping",
        (
            (
                "__init__",
                ("m", "batch_first", "loss_reduction", "max_grad_norm", "use_ghost_clipping"),
            ),
            ("capture_backprops_hook", ("module",)),  # overridden by GhostModule
            ("enable_hooks", ()),  # overridden by GhostModule
            ("disable_hooks", ()),
            ("to_standard_module", ()),
        ),
    ),
    Use("opacus.optimizers.DPOptimizer", _OPTIMIZER),
    Use("opacus.optimizers.DPOptimizerFastGradientClipping", _OPTIMIZER),
    Use(
        "opacus.utils.fast_gradient_clipping_utils.DPLossFastGradientClipping",
        (("__init__", ("module", "optimizer", "criterion", "loss_reduction")), ("__call__", ())),
    ),
    Use(
        "opacus.utils.fast_gradient_clipping_utils.DPTensorFastGradientClipping",
        (
            ("__init__", ("module", "optimizer", "loss_per_sample", "loss_reduction")),
            ("backward", ()),
        ),
    ),
    Use(
        "opacus.validators.ModuleValidator",
        (("validate", ("module", "strict")), ("fix", ("module",))),
    ),
    Use(
        "opacus.accountants.RDPAccountant",
        (("get_optimizer_hook_fn", ("sample_rate",)), ("get_epsilon", ("delta",))),
    ),
)


def problems() -> list[str]:
    """What the installed Opacus lacks of :data:`USED` (empty when it has everything)."""
    found = []
    for use in USED:
        try:
            owner = use.resolve()
        except (ImportError, AttributeError):
            found.append(f"{use.path} is missing")
            continue
        for member, params in use.members:
            if not hasattr(owner, member):
                found.append(f"{use.path}.{member} is missing")
                continue
            found += [f"{use.path}.{member} takes no {p}" for p in _lacks(owner, member, params)]
    return found


def _lacks(owner: Any, member: str, params: tuple[str, ...]) -> list[str]:
    """The names in ``params`` that ``owner.member`` does not take by name (``**kwargs`` aside)."""
    if not params:
        return []
    taken = inspect.signature(getattr(owner, member)).parameters
    return [p for p in params if p not in taken or taken[p].kind is inspect.Parameter.VAR_KEYWORD]


def _version(text: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def check(version: str) -> None:
    """Refuse an Opacus that lacks what privml uses; warn when it is newer than tested.

    Below :data:`TESTED` or missing anything of :data:`USED`:
    :class:`~privml.exceptions.OptionalDependencyError` (DP-SGD cannot run
    as designed). Newer than tested but complete: a ``UserWarning`` (pip
    enforces the pin, so this is an override made on purpose; what privml
    relies on is present, and the tests in ``tests/dp/torch`` say whether it
    still behaves).
    """
    low, high = TESTED
    wanted = f"opacus>={low[0]}.{low[1]},<{high[0]}.{high[1]}"
    missing = problems()
    if _version(version) < low or missing:
        why = f"it lacks {'; '.join(missing)}" if missing else "it is older than that"
        raise OptionalDependencyError(
            f"DP-SGD needs {wanted}; the installed opacus {version} cannot serve ({why}): "
            "pip install 'privml[torch]'",
            name="opacus",
        )
    if _version(version) >= high:
        warnings.warn(
            f"opacus {version} is newer than privml was tested with ({wanted}); every Opacus "
            "object privml uses is present, but run privml's tests/dp/torch before relying on it",
            UserWarning,
            stacklevel=2,
        )


def strip(module: nn.Module) -> None:
    """Remove what Opacus left on ``module`` and no public Opacus method removes."""
    for sub in module.modules():
        for attr in MODULE_LEFTOVERS:
            sub.__dict__.pop(attr, None)
    for p in module.parameters():
        for attr in PARAM_LEFTOVERS:
            if hasattr(p, attr):
                delattr(p, attr)


class GhostModule(GradSampleModuleFastGradientClipping):  # type: ignore[misc]
    """Opacus's ghost-clipping module, noting whether the last backward was the clipped pass.

    Relies on how ``DPTensorFastGradientClipping.backward`` runs the two
    passes: the first with hooks on (``capture_backprops_hook`` computes the
    per-sample norms), then ``disable_hooks()``, the clipped second pass, and
    ``enable_hooks()``. A plain ``loss.backward()`` runs the hooks but never
    re-enables them from off, so ``privml_clipped`` stays False.
    """

    privml_clipped = False

    def capture_backprops_hook(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.hooks_enabled:  # a first (unclipped) pass is under way
            self.privml_clipped = False
        return super().capture_backprops_hook(module, *args, **kwargs)

    def enable_hooks(self) -> None:
        if not getattr(self, "hooks_enabled", True):  # the clipped pass, run with hooks off, ended
            self.privml_clipped = True
        super().enable_hooks()
