"""Collection aliases: versioned collections (``NAME_v1``, ``NAME_v2``, ...) behind an alias ``NAME``.

Qdrant's answer to changing a collection without downtime: readers query the alias, a new
version is built beside the live one, and the alias is moved in one ``update_aliases``
request (delete + create, applied by the server as one change), so a reader sees the old
version or the new one, never none. A server (gRPC or REST) and local mode keep aliases;
Qdrant Edge has none (its target says so). What is here is target-neutral: naming, listing
and the switch, over the three alias methods a target offers (``collection_names``,
``aliases``, ``update_aliases``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pg2qdrant.core.errors import InputError


def version_name(alias: str, number: int) -> str:
    return f"{alias}_v{number}"


def version_number(alias: str, collection: str) -> int | None:
    """N when ``collection`` is version N of ``alias`` (``ALIAS_vN``), else None."""
    match = re.fullmatch(re.escape(alias) + r"_v([1-9][0-9]*)", collection)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Version:
    name: str
    number: int
    points: int | None  # None: not counted
    live: bool  # the alias points to it


@dataclass(frozen=True)
class AliasState:
    """What the target holds for ``alias``: its versions (oldest first), the collection the alias
    points to (None: no alias), and whether a plain collection has the alias's own name."""

    alias: str
    versions: list[Version]
    live: str | None
    plain_collection: bool

    @property
    def next_number(self) -> int:
        return max((v.number for v in self.versions), default=0) + 1

    def version(self, name_or_number: str) -> Version:
        """A version named ``NAME_vN``, ``vN`` or ``N`` (InputError naming the versions there are)."""
        text = name_or_number.strip()
        number = version_number(self.alias, text)
        if number is None and re.fullmatch(r"v?[1-9][0-9]*", text):
            number = int(text.lstrip("v"))
        for v in self.versions:
            if v.number == number:
                return v
        there = ", ".join(v.name for v in self.versions) or "none"
        raise InputError(f"{name_or_number!r} is not a version of alias {self.alias!r} (versions: {there}).",
                         fix=f"name one of them (`pg2qdrant alias list {self.alias}` lists them).")


def alias_state(target, alias: str, *, count: bool = True) -> AliasState:
    """The versions of ``alias`` in ``target``, their point counts (``count``) and which one is live."""
    names = target.collection_names()
    live = target.aliases().get(alias)
    versions = sorted((version_number(alias, n), n) for n in names if version_number(alias, n) is not None)
    return AliasState(alias, [Version(n, num, target.count(n) if count else None, n == live)
                              for num, n in versions], live, alias in names)


def switch_alias(target, alias: str, collection: str, *, exists: bool) -> None:
    """Point ``alias`` at ``collection`` in one request: delete (when it ``exists``) + create."""
    target.update_aliases(delete=[alias] if exists else [], create=[(alias, collection)])
