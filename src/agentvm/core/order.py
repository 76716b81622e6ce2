"""Natural order for names people read: ``DC0_C0_H2`` before ``DC0_C0_H10``.

Used wherever hosts are listed (the IP plan's canonical order, the progress rows, status). Pure.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key that compares the runs of digits in ``text`` as numbers and the rest as text."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(text) if part)
