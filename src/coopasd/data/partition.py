"""Which factory holds which machine types (completely non-iid by default: one type each)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coopasd.config.factories import factory_parts
from coopasd.errors import ConfigError


@dataclass(frozen=True)
class Factory:
    """One participant: a name and the machine types whose recordings it holds."""

    name: str
    machine_types: tuple[str, ...]


def parse_factories(spec: str, machine_types: Sequence[str]) -> list[Factory]:
    """``"plantA=fan+pump;plantB=valve"`` -> factories; empty -> one factory per machine type.

    Every machine type in the data must belong to exactly one factory, and every factory has its own name.
    """
    available = list(machine_types)
    if not spec.strip():
        return [Factory(m, (m,)) for m in available]
    factories: list[Factory] = []
    seen: dict[str, str] = {}
    for name, members in factory_parts(spec):
        for m in members:
            if m not in available:
                raise ConfigError(f"factory '{name}': unknown machine type '{m}' (data has: {', '.join(available)})")
            if m in seen:
                raise ConfigError(f"machine type '{m}' is assigned to both '{seen[m]}' and '{name}'")
            seen[m] = name
        factories.append(Factory(name, members))
    unassigned = [m for m in available if m not in seen]
    if unassigned:
        raise ConfigError(f"machine type(s) {', '.join(unassigned)} belong to no factory")
    return factories
