"""Random cron expressions aimed at a date, for the differential test against cronie's model.

Each field is a wildcard (`*`, `*/S`), a value, a range, a stepped range, `N/S`, a list of
those, names (JAN, MON, SAT-SUN), `L`, `LW`, `nL`, `n#k`, or a macro. The values lean
towards the target date and hour (the day the clock changes), so most expressions
fire near the transition instead of never in the window.
"""

from __future__ import annotations

import random
from datetime import datetime

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DOWS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
MACROS = ["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"]


def _near(rng: random.Random, target: int, low: int, high: int, spread: int) -> int:
    return max(low, min(high, target + rng.randint(-spread, spread)))


def _term(rng: random.Random, target: int, low: int, high: int, spread: int) -> str:
    kind = rng.random()
    a = _near(rng, target, low, high, spread)
    if kind < 0.35:
        return str(a)
    b = _near(rng, target, low, high, spread)
    a, b = min(a, b), max(a, b)
    if kind < 0.6:
        return f"{a}-{b}"
    step = rng.choice([1, 2, 3, 5, 7, 15, 30])
    if kind < 0.85:
        return f"{a}-{b}/{step}"
    return f"{a}/{step}"


def _numeric_field(rng: random.Random, target: int, low: int, high: int, spread: int) -> str:
    kind = rng.random()
    if kind < 0.25:
        return "*"
    if kind < 0.4:
        return f"*/{rng.choice([2, 3, 4, 5, 6, 10, 15, 20, 30, 45, 90])}"
    if kind < 0.75:
        return _term(rng, target, low, high, spread)
    terms = [_term(rng, target, low, high, spread) for _ in range(rng.randint(2, 3))]
    if rng.random() < 0.1:
        terms.append("*")  # `*` inside a list: cronie's flag reads only the first character
    return ",".join(terms)


def _month_field(rng: random.Random, month: int) -> str:
    kind = rng.random()
    if kind < 0.45:
        return "*"
    if kind < 0.6:
        return MONTHS[month - 1] if rng.random() < 0.5 else MONTHS[month - 1].lower()
    if kind < 0.75:
        start = rng.randint(1, month)
        end = rng.randint(month, 12)
        return f"{MONTHS[start - 1]}-{MONTHS[end - 1]}"
    return _numeric_field(rng, month, 1, 12, 1)


def _dow_field(rng: random.Random, dow: int, day: int) -> str:
    kind = rng.random()
    if kind < 0.4:
        return "*"
    if kind < 0.5:
        return DOWS[dow]
    if kind < 0.6:
        return rng.choice(["SAT-SUN", "FRI-SUN", "6-0", "MON-FRI", "sat,sun", "1-5", "*/2"])
    if kind < 0.7:
        return f"{rng.choice([dow, dow + 7 if dow == 0 else dow])}L"
    if kind < 0.8:
        return f"{rng.choice([DOWS[dow], str(dow)])}#{(day - 1) // 7 + 1}"
    if kind < 0.9:
        return ",".join(
            [str(dow), DOWS[(dow + rng.randint(1, 6)) % 7], f"{(dow + 3) % 7}#{rng.randint(1, 5)}"]
        )
    return _numeric_field(rng, dow, 0, 7, 2)


def _dom_field(rng: random.Random, day: int) -> str:
    kind = rng.random()
    if kind < 0.45:
        return "*"
    if kind < 0.55:
        return rng.choice(["L", "LW", f"{day},L", "1,LW"])
    return _numeric_field(rng, day, 1, 31, 3)


def expression(rng: random.Random, target: datetime) -> str:
    """One random expression leaning towards the local wall time `target` (naive)."""
    if rng.random() < 0.04:
        return rng.choice(MACROS)
    dow = (target.weekday() + 1) % 7
    return " ".join(
        [
            _numeric_field(rng, target.minute, 0, 59, 20),
            _numeric_field(rng, target.hour, 0, 23, 2),
            _dom_field(rng, target.day),
            _month_field(rng, target.month),
            _dow_field(rng, dow, target.day),
        ]
    )
