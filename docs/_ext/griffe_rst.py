"""Griffe extension for the API pages: reads reidkit's reST-flavoured docstrings as Markdown.

reidkit's docstrings are Google style with a few reStructuredText habits. Rendered as Markdown
by mkdocstrings they would show raw roles and, worse, turn doctest lines into broken reference
links (``[x][0]`` followed by ``['a']``), which ``mkdocs build --strict`` rejects. This extension
rewrites, before parsing:

- ``Example:`` → ``Examples:`` (Griffe's Google parser turns ``>>>`` lines of an Examples section
  into code blocks);
- ``:class:`X``` / ``:func:`` / ``:meth:`` / ``:mod:`` / ``:data:`` / ``:attr:`` / ``:exc:`` roles → ``X``;
- a paragraph ending in ``::`` (reST literal block) → ``:``.

It is loaded by ``mkdocs.yml`` only; the code and its docstrings are not changed.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const|ref):`~?([^`]+)`")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_LITERAL = re.compile(r"(\S)::\s*$", re.M)


def rewrite(text: str) -> str:
    """The Markdown-friendly form of one docstring."""
    text = _EXAMPLE.sub(r"\1Examples:", text)
    text = _ROLE.sub(r"`\1`", text)
    return _LITERAL.sub(r"\1:", text)


class RstToMarkdown(Extension):
    """Rewrite every docstring once the object tree is loaded (see the module docstring)."""

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        doc = getattr(obj, "docstring", None)
        if doc is not None and isinstance(doc.value, str):
            doc.value = rewrite(doc.value)
