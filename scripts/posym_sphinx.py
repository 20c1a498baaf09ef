"""Sphinx extension of the posym book (staged by scripts/build_book.py as _ext/posym_sphinx.py).

* **One copy of every inline script.** sphinx-thebe registers its configuration script (``const
  THEBE_JS_URL = ...``) with ``filename=None``; Sphinx 7.4's HTML builder then holds it twice (once as
  ``None``, once as ``''``, which compare unequal), and every page threw "Identifier 'THEBE_JS_URL' has
  already been declared". The page's script list is de-duplicated before it is rendered.
* **Colab opens the generated notebook.** The theme's Colab button points at ``<page>.ipynb`` next to
  the page's source (``book/<chapter>.ipynb``); the repository keeps the launchable notebooks in
  ``notebooks/<chapter>.ipynb`` (``make notebooks``), so the link is pointed there.
* **Author-year bibliography.** The pybtex style ``posym_author_year`` labels entries "Urrutia et al.,
  2026" (a, b, ... when two entries share a label), so the bibliography matches the author-year citations
  in the text (``bibtex_reference_style: author_year``).
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath

NOTEBOOKS_DIR = "notebooks"


# --- scripts -------------------------------------------------------------------------------------

def _asset_key(asset):
    attrs = getattr(asset, "attributes", {}) or {}
    return (getattr(asset, "filename", None) or "", getattr(asset, "priority", 500),
            tuple(sorted((k, str(v)) for k, v in attrs.items())))


def dedupe_scripts(app, pagename, templatename, context, doctree):
    files = context.get("script_files")
    if not files:
        return
    seen, keep = set(), []
    for asset in files:
        key = _asset_key(asset)
        if key not in seen:
            seen.add(key)
            keep.append(asset)
    files[:] = keep


# --- launch buttons ------------------------------------------------------------------------------

def notebook_link(url: str, pagename: str, notebooks_dir: str = NOTEBOOKS_DIR) -> str:
    """A launch URL ending in ``/<pagename>.ipynb`` rewritten to ``/<notebooks_dir>/<name>.ipynb``."""
    name = PurePosixPath(pagename).name
    return re.sub(rf"/{re.escape(pagename)}\.ipynb$", f"/{notebooks_dir}/{name}.ipynb", url)


def _walk_buttons(buttons):
    for b in buttons or []:
        if isinstance(b, dict):
            yield b
            yield from _walk_buttons(b.get("buttons"))


def point_launch_buttons(app, pagename, templatename, context, doctree):
    for b in _walk_buttons(context.get("header_buttons")):
        if b.get("type") == "link" and b.get("text") in ("Colab", "Binder", "Deepnote") and b.get("url"):
            b["url"] = notebook_link(b["url"], pagename, app.config.posym_notebooks_dir)


# --- bibliography --------------------------------------------------------------------------------

def _register_author_year():
    from pybtex.plugin import register_plugin
    from pybtex.style.formatting.unsrt import Style as UnsrtStyle
    from pybtex.style.labels import BaseLabelStyle

    def last(person) -> str:
        return " ".join(n.render_as("text") for n in person.rich_last_names)

    class AuthorYearLabels(BaseLabelStyle):
        def format_labels(self, sorted_entries):
            labels = []
            for e in sorted_entries:
                people = e.persons.get("author") or e.persons.get("editor") or []
                if not people:
                    who = e.fields.get("organization") or e.key
                elif len(people) == 1:
                    who = last(people[0])
                elif len(people) == 2:
                    who = f"{last(people[0])} and {last(people[1])}"
                else:
                    who = f"{last(people[0])} et al."
                labels.append((who, e.fields.get("year", "n.d.")))
            counts = {}
            for lab in labels:
                counts[lab] = counts.get(lab, 0) + 1
            seen = {}
            for who, year in labels:
                suffix = ""
                if counts[(who, year)] > 1:
                    suffix = "abcdefghijklmnopqrstuvwxyz"[seen.get((who, year), 0)]
                    seen[(who, year)] = seen.get((who, year), 0) + 1
                yield f"{who}, {year}{suffix}"

    class AuthorYearStyle(UnsrtStyle):
        default_label_style = "posym_author_year"
        default_sorting_style = "author_year_title"

    register_plugin("pybtex.style.labels", "posym_author_year", AuthorYearLabels, force=True)
    register_plugin("pybtex.style.formatting", "posym_author_year", AuthorYearStyle, force=True)


def setup(app):
    app.add_config_value("posym_notebooks_dir", NOTEBOOKS_DIR, "html")
    _register_author_year()
    app.connect("html-page-context", dedupe_scripts, priority=100)
    app.connect("html-page-context", point_launch_buttons, priority=600)  # after the theme's (501)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
