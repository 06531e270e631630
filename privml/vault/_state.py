"""One lifecycle for a vault and everything reached through it.

A :class:`VaultState` is shared by the vault, its services (``vault.policy``,
``vault.models``, ``vault.audit``, ``vault.ledger``, the dataset store) and every
object they hand out that can act on the vault later (sessions, ``session.he``,
``session.dp``, field ciphers, ledger reservations). After
:meth:`VaultState.close`:

- every public method and property of all of them raises
  :class:`~privml.exceptions.VaultClosedError` before doing anything;
- the metadata engine refuses every new connection, so no code path that
  reaches the database (public or not) can read or write;
- the close hooks have dropped the key material the services held.

:meth:`VaultState.guard` gives an object a subclass of its own class, made once
per class and state, whose public methods and properties check the state
first; ``isinstance``, the class name and the docstrings are unchanged.
Objects returned by a guarded method whose class is one of :data:`SERVICES`
are guarded in turn, so nothing reached from a vault outlives its close.

Examples
--------
>>> class Counter:
...     def bump(self) -> int:
...         return 1
>>> state = VaultState()
>>> counter = state.guard(Counter())
>>> counter.bump(), isinstance(counter, Counter)
(1, True)
>>> state.close()
>>> counter.bump()
Traceback (most recent call last):
...
privml.exceptions.VaultClosedError: the vault is closed: ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event

from ..exceptions import VaultClosedError

__all__ = ["SERVICES", "VaultState"]

T = TypeVar("T")

#: Classes whose instances, when handed out by a guarded object, are guarded too.
SERVICES = frozenset(
    {
        "privml.vault._session.Session",
        "privml.he._session.HESession",
        "privml.dp._session.DPSession",
        "privml.crypto.field.FieldCipher",
        "privml.accounting.ledger.Reservation",
    }
)
#: Public names that stay callable after close (closing twice is harmless).
_ALWAYS = frozenset({"close"})
_MESSAGE = (
    "the vault is closed: it and every session, service and object reached through it "
    "refuse from now on; reopen it with privml.Vault.open(path, key=...) and start a new session"
)


class VaultState:
    """Open until :meth:`close`; then every guarded object and the engine refuse."""

    def __init__(self) -> None:
        self._closed = False
        self._hooks: list[Callable[[], None]] = []
        self._classes: dict[type, type] = {}

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def check(self) -> None:
        """Raise :class:`~privml.exceptions.VaultClosedError` if the vault was closed."""
        if self._closed:
            raise VaultClosedError(_MESSAGE)

    def on_close(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once when the state closes (to drop keys, release resources)."""
        self._hooks.append(hook)

    def close(self) -> None:
        """Refuse from now on, then run the close hooks (each once, all of them)."""
        if self._closed:
            return
        self._closed = True
        hooks, self._hooks = self._hooks, []
        failures: list[BaseException] = []
        for hook in hooks:
            try:
                hook()
            except Exception as err:  # run every hook; report the first failure after
                failures.append(err)
        if failures:
            raise failures[0]

    def bind_engine(self, engine: sa.Engine) -> None:
        """Make ``engine`` refuse every connection checkout once the state is closed."""

        def _checkout(*_args: Any) -> None:
            self.check()

        event.listen(engine, "checkout", _checkout)

    def guard(self, obj: T) -> T:
        """Make every public method and property of ``obj`` check this state first."""
        cls = type(obj)
        if getattr(cls, "_lifecycle_state", None) is self:
            return obj
        guarded = self._classes.get(cls)
        if guarded is None:
            guarded = self._classes[cls] = self._subclass(cls)
        obj.__class__ = guarded
        return obj

    def adopt(self, value: T) -> T:
        """Guard ``value`` if it is a service object (see :data:`SERVICES`); return it."""
        kind = type(value)
        if f"{kind.__module__}.{kind.__qualname__}" in SERVICES:
            return self.guard(value)
        return value

    def _subclass(self, cls: type) -> type:
        namespace: dict[str, Any] = {
            "__slots__": (),
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "_lifecycle_state": self,
        }
        for name in dir(cls):
            if name.startswith("_") or name in _ALWAYS:
                continue
            member = inspect.getattr_static(cls, name)
            if isinstance(member, property):
                namespace[name] = property(
                    self._checked(member.fget) if member.fget else None,
                    self._checked(member.fset) if member.fset else None,
                    self._checked(member.fdel) if member.fdel else None,
                    member.__doc__,
                )
            elif inspect.isfunction(member):
                namespace[name] = self._checked(member)
        return type(cls.__name__, (cls,), namespace)

    def _checked(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def checked(*args: Any, **kwargs: Any) -> Any:
            self.check()
            return self.adopt(fn(*args, **kwargs))

        return checked
