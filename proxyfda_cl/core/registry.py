"""A tiny name -> factory registry, as timm's ``register_model`` does."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Maps names to factories; unknown names raise a ``ConfigError`` listing valid ones.

    Args:
        kind: what is registered ("strategy", "benchmark", ...), used in error messages.
        field: the config field that names an entry, used in error messages.
    """

    def __init__(self, kind: str, field: str) -> None:
        self.kind = kind
        self.field = field
        self._items: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator that registers ``fn`` under ``name``."""

        def deco(fn: F) -> F:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = fn
            return fn

        return deco

    def get(self, name: str) -> F:
        """The factory for ``name``; a one-line ``ConfigError`` when it is unknown."""
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"{self.field}: unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
