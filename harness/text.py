"""Untrusted text made safe to show: on a terminal, and in a Markdown table.

Adapter names, versions, exception messages, notes and every field of a report someone
else wrote are untrusted: an ANSI escape in an adapter's ``name`` could rewrite the
terminal (or, with OSC 52, the clipboard), and a ``|``, a newline or ``<script>`` in a
note could break a Markdown table or inject HTML into a rendered report. Every printed
line and every writer passes such text through one of these two functions (HTML and XML
have their own escaping in their writers).

>>> print(terminal("evil" + chr(27) + "]52;c;ZXZpbA==" + chr(7) + " name"))
evil\\x1b]52;c;ZXZpbA==\\x07 name
>>> print(markdown_cell("a | b" + chr(10) + "<script>"))
a \\| b &lt;script&gt;
"""

from __future__ import annotations

import unicodedata
from typing import Any

__all__ = ["markdown_cell", "markdown_code", "terminal"]


def _escaped(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _plain(value: Any) -> str:
    return str.__str__(value) if isinstance(value, str) else str(value)


def terminal(value: Any, *, keep_newlines: bool = False) -> str:
    """``value`` as text with every control and format character shown escaped (``\\x1b``,
    ``\\u202e``): C0 and C1 controls, DEL, and Unicode format characters (bidirectional
    overrides, zero-width characters). Newlines are kept only with ``keep_newlines``."""
    text = _plain(value)
    out = []
    for ch in text:
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(_escaped(ch))
        else:
            out.append(ch)
    return "".join(out)


def markdown_cell(value: Any) -> str:
    """``value`` as text for one Markdown table cell (or a line of prose): controls
    escaped as on a terminal, whitespace runs (newlines too) as one space, ``|`` escaped,
    and ``&``, ``<``, ``>`` as entities, so no HTML reaches a renderer."""
    text = terminal(" ".join(_plain(value).split()))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|")


def markdown_code(value: Any) -> str:
    """``value`` as an inline code span for a Markdown table cell: controls escaped,
    whitespace runs as one space, ``|`` escaped (GitHub's tables split on it even in
    code), and a fence of backticks longer than any run of them inside."""
    text = terminal(" ".join(_plain(value).split())).replace("|", "\\|")
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"
