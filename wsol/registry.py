"""A tiny name → factory registry for user-selectable components."""
from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, TypeVar

from wsol.errors import UnknownNameError, did_you_mean

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """Maps names (as the user types them) to factories."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that records ``fn`` under ``name``."""

        def decorator(fn: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> T:
        """Return the factory for ``name`` or raise a one-line error listing the choices."""
        try:
            return self._entries[name]
        except KeyError:
            choices = ", ".join(sorted(self._entries))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; choose one of: {choices}{did_you_mean(name, self._entries)}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
