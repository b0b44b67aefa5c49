"""Glazer tilt systems and the space groups they give for each cation ordering (Howard & Stokes, Acta Cryst. B54, 782 (1998);
Howard, Kennedy & Woodward, Acta Cryst. B59, 463 (2003)).

Tables: Howard & Stokes (1998) for ABX3; Howard, Kennedy & Woodward (2003) for rock-salt B order; layered A and
rock-salt A + rock-salt B from the same construction, each verified with spglib.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dp_screen.errors import InputError

#: ABX3 (A = A', B = B'), Howard & Stokes 1998
SIMPLE_PEROVSKITE: dict[str, int] = {
    "a0a0a0": 221,
    "a0a0c-": 140,
    "a0a0c+": 127,
    "a0b-b-": 74,
    "a-a-a-": 167,
    "a+b-b-": 62,
    "a0b-c-": 12,
    "a-b-b-": 15,
    "a0b+c-": 63,
    "a0b+b+": 139,
    "a+a+a+": 204,
    "a+a+c-": 137,
    "a+b+c+": 71,
    "a-b-c-": 2,
    "a+b-c-": 11,
}

#: ordering -> tilt system -> space-group number
SPACE_GROUPS: dict[str, dict[str, int]] = {
    "rocksalt": {
        "a0a0a0": 225,
        "a0a0c+": 128,
        "a0a0c-": 87,
        "a0b+b+": 134,
        "a+a+a+": 201,
        "a+b+c+": 48,
        "a0b-b-": 12,
        "a-a-a-": 148,
        "a0b-c-": 2,
        "a-b-b-": 2,
        "a-b-c-": 2,
        "a0b+c-": 15,
        "a+a+c-": 86,
        "a+b-b-": 14,
        "a+b-c-": 2,
    },
    "layered": {
        "a0a0a0": 129,
        "a0a0c+": 90,
        "a0a0c-": 85,
        "a-a-c0": 11,
        "a-a-c+": 4,
        "a0b-c0": 12,
        "a+a+c-": 81,
    },
    "rocksalt-A": {
        "a0a0a0": 216,
        "a0a0c+": 118,
        "a0a0c-": 82,
        "a0b+b+": 111,
        "a+a+a+": 195,
        "a+b+c+": 16,
        "a0b-b-": 8,
        "a-a-a-": 146,
        "a0b+c-": 5,
        "a+a+c-": 81,
        "a+b-b-": 7,
    },
}

#: the five tilt systems that cover ~97% of ordered double perovskites (Lufaso, Barnes & Woodward 2006), per
#: ordering; the layered ordering gets its own common ones (untilted, a0a0c-, a-a-c+ as in NaLaFeWO6)
DEFAULT_TILTS: dict[str, tuple[str, ...]] = {
    "rocksalt": ("a0a0a0", "a0a0c-", "a-a-a-", "a0b-b-", "a+b-b-"),
    "layered": ("a0a0a0", "a0a0c-", "a-a-c0", "a0b-c0", "a-a-c+"),
    "rocksalt-A": ("a0a0a0", "a0a0c-", "a-a-a-", "a0b-b-", "a+b-b-"),
}

_TILT_RE = re.compile(r"^a([0+-])([ab])([0+-])([abc])([0+-])$")


@dataclass(frozen=True)
class TiltSystem:
    """A Glazer tilt system: per axis x, y, z the sense ("0", "+", "-") and which amplitude it shares."""

    symbol: str
    senses: tuple[str, str, str]
    groups: tuple[int, int, int]  # amplitude index per axis, -1 for an untilted axis

    @property
    def n_amplitudes(self) -> int:
        """Number of independent tilt amplitudes."""
        return len({g for g in self.groups if g >= 0})

    @property
    def untilted(self) -> bool:
        """True for a0a0a0."""
        return self.n_amplitudes == 0


def parse_tilt(symbol: str) -> TiltSystem:
    """Parse a Glazer symbol such as ``a+b-b-`` or ``a0a0c-``; InputError on anything else."""
    m = _TILT_RE.match(symbol.strip())
    if not m:
        raise InputError(
            f"unknown tilt system {symbol!r}; expected a Glazer symbol like a0a0a0, a0a0c-, a-a-a-, a+b-b- "
            f"(letters a, b, c each followed by 0, + or -)"
        )
    s1, l2, s2, l3, s3 = m.groups()
    letters, senses = ("a", l2, l3), (s1, s2, s3)
    amplitude_of: dict[str, int] = {}
    groups = []
    for letter, sense in zip(letters, senses, strict=True):
        if sense == "0":
            groups.append(-1)
            continue
        key = f"{letter}{sense}"
        if letter in {k[0] for k in amplitude_of} and key not in amplitude_of:
            raise InputError(f"tilt system {symbol!r}: equal letters must have the same sense")
        amplitude_of.setdefault(key, len(amplitude_of))
        groups.append(amplitude_of[key])
    return TiltSystem(symbol.strip(), senses, tuple(groups))


def expected_space_group(ordering: str, tilt: str, same_a: bool, same_b: bool) -> int | None:
    """Space group the table gives for an ordering and tilt; None where no table covers the decoration.

    ``same_a`` / ``same_b``: A and A' (B and B') are the same species. With both, the compound is a simple ABX3
    perovskite (Howard & Stokes table). With B = B' only, or A = A' for a layered / rock-salt A ordering, there is no
    table and the space group is recorded unverified.
    """
    if ordering not in SPACE_GROUPS:
        raise InputError(f"unknown ordering {ordering!r}; allowed: {', '.join(SPACE_GROUPS)}")
    table = SPACE_GROUPS[ordering]
    parse_tilt(tilt)  # a malformed symbol gets its own message
    if tilt not in table:
        raise InputError(
            f"tilt system {tilt!r} is not available for ordering {ordering!r}; allowed: {', '.join(table)}"
        )
    if same_a and same_b:
        return SIMPLE_PEROVSKITE.get(tilt)
    if same_b or (same_a and ordering != "rocksalt"):
        return None
    return table[tilt]
