"""Untrusted text made safe to show and to keep (docs/security.md).

Blocks, webhook payloads and models write text that reaches a terminal and the state
database. `visible` turns every control character into a printable escape, so no ESC,
OSC, bare CR or bidi override acts on a terminal; `escape_markup` keeps Rich from reading
`[bold]` in such text as markup; `shown` does both; `cap` cuts a string with a marker.
"""

from __future__ import annotations

import re

KIB = 1024
TEXT_CAP = 4 * KIB  # error messages, skip reasons, names: every block-controlled string

# C0 controls but tab and newline, DEL, C1 controls, and the Unicode format characters
# that reorder or hide text (bidi embeddings, overrides and isolates, zero-width marks).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
# Rich's own rule (rich.markup.escape): a `[` that opens a tag is escaped with a backslash,
# and backslashes before it are doubled so they stay literal.
_MARKUP = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with control characters shown as escapes (`\\x1b`, `\\r`, `\\u202e`).

    Newlines and tabs stay; a CRLF line end becomes a newline; a bare CR becomes `\\r`.
    """
    text = text.replace("\r\n", "\n")
    return _CONTROL.sub(lambda m: "\\r" if m.group() == "\r" else _escape(m), text)


def escape_markup(text: str) -> str:
    """`text` with what Rich would read as markup escaped (`[bold]` prints as itself)."""

    def sub(m: re.Match[str]) -> str:
        backslashes, tag = m.group(1), m.group(2)
        return f"{backslashes}{backslashes}\\{tag}"

    text = _MARKUP.sub(sub, text)
    if text.endswith("\\") and not text.endswith("\\\\"):
        text += "\\"  # a trailing backslash would escape the markup that follows it
    return text


def shown(text: object) -> str:
    """Untrusted text ready for a Rich console with markup on: visible, markup escaped."""
    return escape_markup(visible(str(text)))


def cap(text: str, limit: int = TEXT_CAP, what: str = "text") -> str:
    """`text` cut to at most `limit` characters, with a marker when it was cut."""
    if len(text) <= limit:
        return text
    size = f"{limit // KIB} KiB" if limit % KIB == 0 else f"{limit} characters"
    return f"{text[:limit]}… [{what} cut at {size}]"
