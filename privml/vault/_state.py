"""One lifecycle for a vault and everything reached through it.

A :class:`VaultState` holds what every service of an open vault shares: the
metadata engine, the vault key and the actor of administrative actions. It is
shared by the vault, its services (``vault.policy``, ``vault.models``,
``vault.audit``, ``vault.ledger``, the dataset store, the key service) and every
object they hand out that can act on the vault later (sessions and their doors,
``session.he``, ``session.dp``, field ciphers, ledger reservations). After
:meth:`VaultState.close`:

- every public method and property of all of them raises
  :class:`~privml.exceptions.VaultClosedError` before doing anything;
- the metadata engine refuses every new connection, so no code path that
  reaches the database (public or not) can read or write;
- the close hooks have dropped the key material the services held, the state
  has dropped the vault key and disposed of the engine.

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
>>> state = VaultState(actor="os:admin")
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
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import event

from ..exceptions import VaultClosedError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from ..crypto.keys import VaultKey

__all__ = ["SERVICES", "VaultState"]

T = TypeVar("T")

#: Classes whose instances, when handed out by a guarded object, are guarded too.
SERVICES = frozenset(
    {
        "privml.vault._session.Session",
        "privml.vault._door.Door",
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
    """Open until :meth:`close`; then every guarded object and the engine refuse.

    Parameters
    ----------
    actor : str
        Who performs administrative actions, for the audit log.
    """

    def __init__(self, *, actor: str) -> None:
        self.actor = actor
        self._closed = False
        self._engine: sa.Engine | None = None
        self._key: VaultKey | None = None
        self._hooks: list[Callable[[], None]] = []
        self._classes: dict[type, type] = {}

    @property
    def engine(self) -> sa.Engine:
        """The metadata engine; :class:`~privml.exceptions.VaultClosedError` once closed."""
        self.check()
        if self._engine is None:
            raise VaultClosedError("no metadata engine is bound to this vault state")
        return self._engine

    @property
    def key(self) -> VaultKey:
        """The vault key (KEK); :class:`~privml.exceptions.VaultClosedError` once closed."""
        self.check()
        if self._key is None:
            raise VaultClosedError("no vault key is bound to this vault state")
        return self._key

    def bind(self, engine: sa.Engine, key: VaultKey) -> None:
        """Hold ``engine`` and ``key``; the engine refuses every connection once closed."""

        def _checkout(*_args: Any) -> None:
            self.check()

        event.listen(engine, "checkout", _checkout)
        self._engine, self._key = engine, key

    def rekey(self, key: VaultKey) -> None:
        """Hold ``key`` from now on (after the vault key was rotated)."""
        self.check()
        self._key = key

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
        """Refuse from now on, run the close hooks (each once, all of them), drop the key
        and dispose of the engine."""
        if self._closed:
            return
        self._closed = True
        hooks, self._hooks = self._hooks, []
        hooks.append(self._release)
        failures: list[BaseException] = []
        for hook in hooks:
            try:
                hook()
            except Exception as err:  # run every hook; report the first failure after
                failures.append(err)
        if failures:
            raise failures[0]

    def _release(self) -> None:
        self._key = None
        if self._engine is not None:
            self._engine.dispose()
        self._engine = None

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
