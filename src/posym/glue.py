"""Values a page quotes in its text: ``{glue:md}`name``` in a chapter's prose reads what :func:`glue_md` stored.

A pipeline module, so that chapter modules may glue the numbers of their sentences where they compute them;
``posym.book.glue_md`` is the same function.
"""
from __future__ import annotations

from typing import Any, Mapping


def glue_md(values: Mapping[str, Any]) -> None:
    """Glue every ``name: text`` of ``values`` as Markdown, for ``{glue:md}`name``` in the page's text."""
    from IPython.display import Markdown
    from myst_nb import glue

    for name, text in values.items():
        glue(name, Markdown(str(text)), display=False)
