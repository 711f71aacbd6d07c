"""Griffe extension (see ``extensions:`` in mkdocs.yml): render the project's docstrings as mkdocstrings expects.

The docstrings are Google style, written for ``help()`` and doctest, with a few reStructuredText habits. Before
griffe parses a docstring, this rewrites, in the copy used for the site only:

* ``Example:`` to ``Examples:``, the section name griffe parses into code blocks (it reads ``Example:`` as an
  admonition of Markdown text, where doctest output such as ``[1, 2]`` would be taken for a link);
* cross-reference roles (``:func:`~stn.x.warp```, ``:class:`Foo```, ...) to inline code (``warp``, ``Foo``);
* a paragraph ending in ``::`` (a literal block follows) to one ending in ``:``;
* an ``Args:`` entry that names several parameters (``mode, fill: ...``) to one entry per parameter.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.M)
_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj|const|ref):`(~?)([^`]+)`")
_LITERAL = re.compile(r"(\S)::[ \t]*\n(?=[ \t]*\n)")
_SECTION = re.compile(r"^(\s*)(\w[\w ]*):\s*$")
_SHARED_ITEM = re.compile(r"^(\s+)(\w+(?:, \w+)+): (.*)$")


def _role(match: re.Match) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _split_shared_items(text: str) -> str:
    lines, out, in_args = text.splitlines(), [], False
    for line in lines:
        section = _SECTION.match(line)
        if section:
            in_args = section.group(2).lower() in ("args", "arguments", "parameters", "params")
        item = _SHARED_ITEM.match(line) if in_args else None
        if item is None:
            out.append(line)
            continue
        indent, names, description = item.groups()
        out.extend(f"{indent}{name}: {description}" for name in names.split(", "))
    return "\n".join(out)


def to_markdown(text: str) -> str:
    """The rewritten docstring (see the module docstring)."""
    text = _EXAMPLE.sub(r"\1Examples:", text)
    text = _ROLE.sub(_role, text)
    text = _LITERAL.sub(r"\1:\n", text)
    return _split_shared_items(text)


class RstToMarkdown(griffe.Extension):
    """Rewrites every object's docstring with `to_markdown` before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
