"""Named registries: how a new annotator (or any other plug-in kind) joins prefsynth.

A module registers a class under a name when it is imported; a config refers to it by that
name. The registry lives in the core layer so that the config can check a name (and a plug-in
module can register itself) without the core importing the layers above it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from prefsynth.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to objects, in registration order (the order is the order things run in)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@ANNOTATORS.register("cdr")`` on a class registers it as ``cdr``."""

        def add(obj: T) -> T:
            known = self._items.get(name)
            if known is not None and known is not obj:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.what} {name!r}; registered: {sorted(self._items)}"
            ) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._items.items()))


def import_plugin(module: str) -> None:
    """Import a module that registers something (a config's ``module:`` entry)."""
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"cannot import plug-in module {module!r}: {e}") from None


#: Kinds of pointwise annotator (``cdr``, ``flr``, ``reward_model`` and plug-ins), see
#: :mod:`prefsynth.annotators.base`. Each registered class has an ``Options`` model that a
#: config's ``annotators.custom[].options`` is checked against.
ANNOTATORS: Registry[type] = Registry("annotator kind")

#: Aggregates: how the annotators' margins on a pair become one strength (``mu``) and an
#: uncertainty (``sigma``), see :mod:`prefsynth.curation.voting`; ``filter.aggregate`` names one.
AGGREGATES: Registry[type] = Registry("aggregate")
