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

__all__ = ["Contents"]


def _bytes(parts: list[torch.Tensor]) -> torch.Tensor:
    """The tensors' values laid end to end, as bytes (NaN compares like any other bits)."""
    flat = torch.cat([t.detach().reshape(-1) for t in parts])
    return flat.view(torch.uint8)


def _odd(t: torch.Tensor) -> bool:
    """Tensors whose values cannot be laid out as bytes (sparse, quantized, meta, nested)."""
    return t.layout != torch.strided or t.is_quantized or t.is_meta or t.is_nested


def _digest(t: torch.Tensor) -> str:
    """A hash of everything ``torch.save`` keeps of an odd tensor (slow; such tensors are rare)."""
    out = io.BytesIO()
    torch.save(t.detach(), out)
    return hashlib.sha256(out.getvalue()).hexdigest()


class Contents:
    """A copy of ``tensors``' values: :meth:`differ` names (by position) those now different.

    The tensors are held (so none can be freed and its identity reused); :meth:`take`
    copies their current values again, in place.
    """

    def __init__(self, tensors: Iterable[torch.Tensor]) -> None:
        self.tensors = list(tensors)
        groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        self._odd: list[int] = []
        for i, t in enumerate(self.tensors):
            if _odd(t):
                self._odd.append(i)
            else:
                groups.setdefault((t.device, t.dtype), []).append(i)
        self._groups = list(groups.values())
        self._copies: list[torch.Tensor] = []
        self._widths: list[list[int]] = []
        self._digests: list[str] = []
        self.take()

    def take(self) -> None:
        """Copy the tensors' current values (the ones :meth:`differ` compares with)."""
        with torch.no_grad():
            copies = []
            # each tensor's bytes in its group's copy, as taken
            self._widths = [
                [self.tensors[i].numel() * self.tensors[i].element_size() for i in g]
                for g in self._groups
            ]
            for n, g in enumerate(self._groups):
                now = _bytes([self.tensors[i] for i in g])
                kept = self._copies[n] if n < len(self._copies) else None
                if kept is not None and kept.shape[1] == now.numel():
                    kept[0].copy_(now)
                else:  # one row: a snapshot, not a table of rows
                    kept = now.clone().unsqueeze(0)
                copies.append(kept)
            self._copies = copies
        self._digests = [_digest(self.tensors[i]) for i in self._odd]

    def differ(self) -> list[int]:
        """Positions of the tensors whose values (or shapes) differ from the copy, in order."""
        found: list[int] = []
        with torch.no_grad():
            for g, row, widths in zip(self._groups, self._copies, self._widths, strict=True):
                now, copy = [self.tensors[i] for i in g], row[0]
                size = sum(t.numel() * t.element_size() for t in now)
                if size == copy.numel() and torch.equal(_bytes(now), copy):
                    continue
                found += self._each(g, copy, widths)
        for i, digest in zip(self._odd, self._digests, strict=True):
            if _digest(self.tensors[i]) != digest:
                found.append(i)
        return sorted(found)

    def _each(self, group: list[int], copy: torch.Tensor, widths: list[int]) -> list[int]:
        """Which tensors of a group that differs do (the slow path: only after a change)."""
        found: list[int] = []
        start = 0
        for i, width in zip(group, widths, strict=True):
            t = self.tensors[i]
            kept = copy[start : start + width]
            start += width
            now = t.detach().reshape(-1).view(torch.uint8)
            if now.numel() != kept.numel() or not torch.equal(now, kept):
                found.append(i)
        return found
