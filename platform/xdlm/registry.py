"""Name -> factory registries for the pluggable parts (schedules, samplers, backbones, datasets...).

A new part is one file plus one ``@REGISTRY.register("name")`` line next to it; ``get`` on an
unknown name raises a ``ValueError`` that lists what exists.

A registry may also describe its entries (a backbone declares its objective): built with
``Registry(kind, info=SomeInfoClass)``, every registration line passes the description's fields,
``@BACKBONES.register("dit", objective="diffusion")``, and ``info(name)`` returns it. The fields are
checked when the line runs, so a missing or misspelt one fails on import, not at first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories of one kind (``kind`` appears in error messages).

    ``info``: optional class (e.g. a frozen dataclass) called with each registration's keyword
    fields to describe the entry; without it, registrations take no fields.
    """

    def __init__(self, kind: str, info: Callable[..., Any] | None = None) -> None:
        self.kind = kind
        self._describe = info
        self._entries: dict[str, T] = {}
        self._infos: dict[str, Any] = {}

    def register(self, name: str, **info_fields: Any) -> Callable[[T], T]:
        info = self._info_from(name, info_fields)

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            self._infos[name] = info
            return entry

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise self._unknown(name) from None

    def info(self, name: str) -> Any:
        """The description given at ``name``'s registration (``None`` for a registry without
        ``info``); an unknown name raises the same ``ValueError`` as ``get``."""
        if name not in self._entries:
            raise self._unknown(name)
        return self._infos[name]

    def available(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def _info_from(self, name: str, fields: dict[str, Any]) -> Any:
        if self._describe is None:
            if fields:
                raise TypeError(
                    f"{self.kind} {name!r}: this registry describes no entries, "
                    f"got fields {', '.join(sorted(fields))}"
                )
            return None
        return self._describe(**fields)

    def _unknown(self, name: str) -> ValueError:
        return ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.available())}")
