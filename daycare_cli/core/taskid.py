"""Task ids made from names: `Über Café` -> `uber-cafe`, `Москва` -> `moskva`.

Accents go first with Unicode's own decomposition (NFKD, then the combining marks
dropped), which needs no table; what is still not ASCII (ß, ø, Cyrillic, Greek, CJK…) is
transliterated by `anyascii` (ISC licence, every script). A name with nothing left to
spell (`!!!`) gets `task-` and a short hash of the name: stable, so scripts that create
the same task twice get the same id.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_ID = 63


def ascii_name(name: str) -> str:
    """`name` in ASCII letters: accents removed, other scripts transliterated."""
    decomposed = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in decomposed if not unicodedata.combining(c))
    if text.isascii():
        return text
    from anyascii import anyascii  # loaded only for names that need it

    return str(anyascii(unicodedata.normalize("NFC", text)))


def slugify(name: str) -> str:
    """A task id from a name: lower case, digits and dashes, at most 63 characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name(name).lower()).strip("-")
    slug = slug[:MAX_ID].rstrip("-")
    if slug:
        return slug
    digest = hashlib.sha256(unicodedata.normalize("NFC", name).encode("utf-8")).hexdigest()
    return f"task-{digest[:8]}"
