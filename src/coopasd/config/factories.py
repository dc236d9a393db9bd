"""The ``[partition] factories`` spec read without the data: names and what each factory holds."""

from __future__ import annotations

from coopasd.errors import ConfigError


def factory_parts(spec: str) -> list[tuple[str, tuple[str, ...]]]:
    """``"plantA=fan+pump;plantB=valve"`` -> ``[(name, machine types), ...]``, checked without the data.

    Each part needs a name and at least one machine type; a name given twice is an error (the second
    factory would silently replace the first).
    """
    parts: list[tuple[str, tuple[str, ...]]] = []
    for part in spec.split(";"):
        if not part.strip():
            continue
        if "=" not in part:
            raise ConfigError(f"factory spec '{part}': expected name=machine+machine")
        name, machines = (x.strip() for x in part.split("=", 1))
        members = tuple(m.strip() for m in machines.split("+") if m.strip())
        if not name or not members:
            raise ConfigError(f"factory spec '{part}': needs a name and at least one machine type")
        if name in dict(parts):
            raise ConfigError(f"[partition] factories = {spec!r}: factory name '{name}' is given twice")
        parts.append((name, members))
    return parts
