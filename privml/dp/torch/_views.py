"""What the loader hands out for each sampled row: its transformed view(s), one row at a time.

Why it is private: DP-SGD's guarantee comes from the sampling (which rows are
in a batch), the per-sample clipping and the noise; how a row's features are
turned into model inputs before its gradient is taken is part of computing
that gradient. The transform gets one row at a time, as a fresh copy (no
storage shared with the table or the rest of the batch), so one call can
depend on one record only. With ``augmentations=K`` a row becomes K
consecutive views whose gradients the optimizer averages before clipping
(:mod:`._optim`, :mod:`._bk`): a record still moves the clipped sum by at
most C, and the charge is that of K = 1. Randomness in a transform (torch's
generator or its own) moves only the features, never the sampling or the
noise, so a caller's seed changes no privacy figure.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...exceptions import ConfigurationError

__all__ = ["Views"]

Transform = Callable[[torch.Tensor], torch.Tensor]


class Views:
    """Applies ``transform`` ``augmentations`` times to each row; checks the output shape.

    The shape (and dtype) every output must have is fixed by one probe on a row
    of zeros, made before any data is read, so an empty batch has the same
    shape as a full one and a transform that changes shape with its input is
    refused before that batch can be stepped.

    Examples
    --------
    >>> import torch
    >>> views = Views(lambda r: r * 2, 3, row_shape=(2,), dtype=torch.float32)
    >>> X, y = views(torch.ones(2, 2), torch.tensor([0, 1]))
    >>> tuple(X.shape), y.tolist()
    ((6, 2), [0, 0, 0, 1, 1, 1])
    """

    def __init__(
        self,
        transform: Transform | None,
        augmentations: int,
        *,
        row_shape: tuple[int, ...],
        dtype: torch.dtype,
    ) -> None:
        self.transform = transform
        self.augmentations = augmentations
        self.shape, self.dtype = row_shape, dtype
        if transform is not None:
            out = self._one(torch.zeros(row_shape, dtype=dtype), probe=True)
            self.shape, self.dtype = tuple(out.shape), out.dtype

    @property
    def identity(self) -> bool:
        """True when rows are handed out as they are (no transform, one view)."""
        return self.transform is None and self.augmentations == 1

    def __call__(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The views of the rows ``X`` (row i's K views at ``i·K ... i·K + K - 1``) and targets."""
        if self.identity:
            return X, y
        k = self.augmentations
        if self.transform is None:
            return X.repeat_interleave(k, dim=0), y.repeat_interleave(k, dim=0)
        out = torch.empty((len(X) * k, *self.shape), dtype=self.dtype)
        for i in range(len(X)):
            for j in range(k):
                out[i * k + j] = self._one(X[i].clone())
        return out, y.repeat_interleave(k, dim=0)

    def _one(self, row: torch.Tensor, *, probe: bool = False) -> torch.Tensor:
        assert self.transform is not None
        with torch.no_grad():
            out = self.transform(row)
        if not isinstance(out, torch.Tensor):
            raise ConfigurationError(
                f"transform= must return a torch Tensor for each row, got {type(out).__name__}"
            )
        if not probe and (tuple(out.shape) != self.shape or out.dtype != self.dtype):
            raise ConfigurationError(
                f"transform= returned a {out.dtype} tensor of shape {tuple(out.shape)} for a "
                f"row, but {self.dtype} of shape {self.shape} for a row of zeros when the run "
                "started: its output shape and dtype must not depend on the row. Crop or pad "
                "to a fixed shape. This batch cannot be stepped."
            )
        return out.detach()
