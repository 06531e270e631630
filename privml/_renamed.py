"""Keywords that were renamed: an old name fails with the new one, not a bare TypeError."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from .exceptions import ConfigurationError

__all__ = ["renamed_keyword"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def renamed_keyword(old: str, fix: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Refuse the keyword ``old`` with a ConfigurationError that says ``fix``.

    Examples
    --------
    >>> @renamed_keyword("colour", "write color= instead")
    ... def paint(*, color: str) -> str:
    ...     return color
    >>> paint(colour="red")
    Traceback (most recent call last):
    ...
    privml.exceptions.ConfigurationError: colour= was renamed: write color= instead
    """

    def wrap(function: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(function)
        def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if old in kwargs:
                raise ConfigurationError(f"{old}= was renamed: {fix}")
            return function(*args, **kwargs)

        return checked

    return wrap
