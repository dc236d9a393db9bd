"""Which factory holds which machine types, or which units of them (completely non-iid by default:
one machine type each).

A unit is one section of a machine type, written ``machine/section`` (``pump/02``): a factory may
run one or two units of a type that other factories run too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from coopasd.config.factories import factory_parts
from coopasd.errors import ConfigError


@dataclass(frozen=True)
class Factory:
    """One participant: a name, the machine types whose recordings it holds and, where it holds only
    some units of them, those units (``machine/section``, or a machine type for all its units; empty:
    every section of its machine types)."""

    name: str
    machine_types: tuple[str, ...]
    units: tuple[str, ...] = ()

    def holds(self, machine_type: str, section: str) -> bool:
        """Whether this factory's recordings include unit ``machine_type/section``."""
        if machine_type not in self.machine_types:
            return False
        return not self.units or machine_type in self.units or unit_name(machine_type, section) in self.units


def unit_name(machine_type: str, section: str) -> str:
    return f"{machine_type}/{section}"


def parse_factories(spec: str, machine_types: Sequence[str], units: Sequence[str] = ()) -> list[Factory]:
    """``"plantA=fan+pump;plantB=valve"`` -> factories; empty -> one factory per machine type.

    A member is a machine type (all its units) or one unit ``machine/section`` of the data's
    ``units``; ``"north=pump/00+fan/01;south=pump/02+pump/01+fan/00"``. Every machine type (every
    unit, where ``units`` are given) must belong to exactly one factory.
    """
    available = list(machine_types)
    if not spec.strip():
        return [Factory(m, (m,)) for m in available]
    by_unit = _claims(spec, available, list(units))
    factories = []
    for name in dict.fromkeys(owner for owner in by_unit.values()):
        held = tuple(u for u, owner in by_unit.items() if owner == name)
        machines = tuple(dict.fromkeys(u.split("/")[0] for u in held))
        factories.append(Factory(name, machines, held if units else ()))
    unassigned = [u for u in (units or available) if u not in by_unit]
    if unassigned:
        what = "unit(s)" if units else "machine type(s)"
        raise ConfigError(f"{what} {', '.join(unassigned)} belong to no factory")
    return factories


def _claims(spec: str, available: list[str], units: list[str]) -> dict[str, str]:
    """Unit (or, without ``units``, machine type) -> the factory that claims it, in spec order."""
    owner: dict[str, str] = {}
    for name, members in factory_parts(spec):  # syntax and unique names
        for member in members:
            for unit in _expand(name, member, available, units):
                if unit in owner and owner[unit] != name:
                    what = "unit" if units else "machine type"
                    raise ConfigError(f"{what} '{unit}' is assigned to both '{owner[unit]}' and '{name}'")
                owner[unit] = name
    return owner


def _expand(factory: str, member: str, available: list[str], units: list[str]) -> list[str]:
    """The units (or machine type) one spec member names; an unknown one is a ConfigError."""
    machine = member.split("/")[0]
    if machine not in available:
        raise ConfigError(f"factory '{factory}': unknown machine type '{machine}' (data has: {', '.join(available)})")
    if "/" in member:
        if member not in units:
            own = [u for u in units if u.startswith(machine + "/")] or ["none: one unit per machine type"]
            raise ConfigError(f"factory '{factory}': unknown unit '{member}' ({machine} has units: {', '.join(own)})")
        return [member]
    return [u for u in units if u.startswith(machine + "/")] or [machine]


def data_units(pairs: Iterable[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Sorted machine types and units ``machine/section`` of ``(machine_type, section)`` pairs."""
    pairs = set(pairs)
    return sorted({m for m, _ in pairs}), sorted(unit_name(m, s) for m, s in pairs)


def factories_of(spec: str, pairs: Iterable[tuple[str, str]]) -> list[Factory]:
    """:func:`parse_factories` over the data's ``(machine_type, section)`` pairs (e.g. of its clips)."""
    machines, units = data_units(pairs)
    return parse_factories(spec, machines, units if "/" in spec else ())
