"""Help text from docstrings: the reST markup of the library's docstrings turned into plain terminal text, so
that ``--help`` shows what the code's own documentation says, without ``double backticks`` or roles.

Example:
    >>> plain("Reproduces :mod:`stn.experiments.table1`; see :func:`~stn.warp` and ``--budget quick``.")
    'Reproduces stn.experiments.table1; see warp and --budget quick.'
    >>> plain(":class:`the transformer <stn.SpatialTransformer>` with *emphasis* and **strength**::")
    'the transformer with emphasis and strength:'
"""

from __future__ import annotations

import re

__all__ = ["plain"]

# :role:`text`, :domain:role:`text` (Sphinx roles); the text may be "title <target>" or "~a.b.name".
_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`([^`]+)`")
_TITLED = re.compile(r"^(.*?)\s*<[^<>]+>$", re.DOTALL)
_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_INTERPRETED = re.compile(r"(?<![\w`])`([^`]+)`(?![\w`])")
_STRONG = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
_EMPHASIS = re.compile(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])")
_LITERAL_BLOCK = re.compile(r"(\S)::$", re.MULTILINE)


def _role_text(match: re.Match) -> str:
    text = match.group(1)
    titled = _TITLED.match(text)
    if titled:
        return titled.group(1)
    return text[1:].rsplit(".", 1)[-1] if text.startswith("~") else text


def plain(text: str) -> str:
    """``text`` with reST roles, literals, interpreted text, emphasis and ``::`` literal-block markers made plain.

    Roles keep their text (``:func:`~a.b``` -> ``b``, ``:mod:`title <a.b>``` -> ``title``); everything else of
    the text (line breaks, indentation, other punctuation) is kept.
    """
    text = _ROLE.sub(_role_text, text)
    text = _LITERAL.sub(r"\1", text)
    text = _INTERPRETED.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    return _LITERAL_BLOCK.sub(r"\1:", text)
