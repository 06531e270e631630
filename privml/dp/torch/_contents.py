"""Bit-exact copies of tensors' contents, compared in a few operations.

Why: a tensor's version counter moves with every in-place operation torch
records, but not with every write: ``t.data.copy_(...)``, ``t.data = ...``,
a NumPy view (``t.numpy()[:] = ...``) and a write to its storage all leave it
where it was. A run that must know that nothing but its own steps changed a
module's tensors therefore compares their contents, byte for byte, with a
copy. The copy costs the tensors' size once more in memory; a comparison is a
few operations per dtype and device (the tensors are laid end to end), whatever
their number.

>>> import torch
>>> w = torch.ones(3)
>>> kept = Contents([w])
>>> kept.differ()
[]
>>> w.data[0] = 5.0  # no version bump
>>> kept.differ()
[0]
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable

import torch

__all__ = ["Contents", "digest"]


def _odd(t: torch.Tensor) -> bool:
    """Tensors whose values cannot be laid out as bytes (sparse, quantized, meta, nested)."""
    return t.layout != torch.strided or t.is_quantized or t.is_meta or t.is_nested


def digest(t: torch.Tensor) -> str:
    """A SHA-256 of a tensor's values: its bytes, in order (``torch.save``'s for sparse,
    quantized, nested or meta tensors, which have no plain byte layout)."""
    if not _odd(t):
        flat = t.detach().cpu().contiguous().reshape(-1)
        try:
            return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()
        except (RuntimeError, TypeError):  # a dtype NumPy cannot view (bfloat16's bytes can)
            pass
    out = io.BytesIO()
    torch.save(t.detach(), out)
    return hashlib.sha256(out.getvalue()).hexdigest()


# Groups of up to this many values are laid end to end for one comparison (a temporary
# of their size); larger ones are compared tensor by tensor, so only the copy is held.
_LAID_OUT = 1 << 20

# Compared as integers of the elements' width: torch.equal on bytes runs a byte at a time.
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64, 16: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """A flat tensor's values as integers of their width (NaN equals itself, -0.0 not 0.0)."""
    return t.view(_BITS[t.element_size()])


class Contents:
    """A copy of ``tensors``' values: :meth:`differ` names (by position) those now different.

    The tensors are held (so none can be freed and its identity reused), each through a
    one-row view of its values where it is contiguous (a copy is one snapshot, not a table
    of rows), so that a group of one dtype and device is compared by one concatenation and
    one comparison; a tensor whose values moved elsewhere (``.data = ...``) differs.
    :meth:`take` copies the current values again. Other tensors (sparse, quantized, not
    contiguous) are compared by a hash.
    """

    def __init__(self, tensors: Iterable[torch.Tensor]) -> None:
        self.tensors = list(tensors)
        groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        self._odd: list[int] = []
        for i, t in enumerate(self.tensors):
            if _odd(t) or not t.is_contiguous():
                self._odd.append(i)
            else:
                groups.setdefault((t.device, t.dtype), []).append(i)
        self._groups = list(groups.values())
        self._views: list[list[torch.Tensor]] = []
        self._where: list[list[int]] = []
        self._moved = True  # the views are to be made
        self._copies: list[torch.Tensor] = []
        self._digests: list[str] = []
        self.take()

    def take(self) -> None:
        """Copy the tensors' current values (the ones :meth:`differ` compares with)."""
        with torch.no_grad():
            if self._moved:  # values moved elsewhere since the views were made: view them anew
                tensors = self.tensors
                self._views = [[tensors[i].detach().view(1, -1) for i in g] for g in self._groups]
                self._where = [[self.tensors[i].data_ptr() for i in g] for g in self._groups]
                self._moved = False
            copies = []
            for n, views in enumerate(self._views):
                kept = self._copies[n] if n < len(self._copies) else None
                width = sum(v.shape[1] for v in views)
                if kept is not None and kept.shape[1] == width:
                    copies.append(torch.cat(views, 1, out=kept))  # in place: one copy held
                else:
                    copies.append(torch.cat(views, 1))
            self._copies = copies
        self._digests = [digest(self.tensors[i]) for i in self._odd]

    def differ(self) -> list[int]:
        """Positions of the tensors whose values (or their place) differ from the copy."""
        found: list[int] = []
        # the views are detached: nothing here is recorded for autograd
        for g, views, where, row in zip(
            self._groups, self._views, self._where, self._copies, strict=True
        ):
            # values moved elsewhere (``.data = ...``, ``set_()``): the view holds the old
            moved = [i for i, w in zip(g, where, strict=True) if self.tensors[i].data_ptr() != w]
            if moved:
                found += moved
                self._moved = True
            else:
                # a large group is compared tensor by tensor, with no second copy
                small = row.shape[1] <= _LAID_OUT
                if not small or not torch.equal(_bits(torch.cat(views, 1)), _bits(row)):
                    found += self._each(g, views, row[0])
        for i, kept in zip(self._odd, self._digests, strict=True):
            if digest(self.tensors[i]) != kept:
                found.append(i)
        return sorted(found)

    @staticmethod
    def _each(group: list[int], views: list[torch.Tensor], copy: torch.Tensor) -> list[int]:
        """Which tensors of a group that differs do (the slow path: only after a change)."""
        found: list[int] = []
        start = 0
        for i, view in zip(group, views, strict=True):
            kept = copy[start : start + view.numel()]
            start += view.numel()
            if not torch.equal(_bits(view[0]), _bits(kept)):
                found.append(i)
        return found
