"""The reader-facing rules of the browser check (scripts/check_html.py), on tiny synthetic measurements.

The browser itself runs in `make browser-check`; here each rule is a plain function of the JSON that the
page probe reports, so every rule is tested on inputs that pass and inputs that must fail.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def ch():
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location("check_html", SCRIPTS / "check_html.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(SCRIPTS))


def page(**kw):
    m = {"errors": [], "images": [], "tables": [], "text": "A clean page with $x$ typeset."}
    m.update(kw)
    return m


def img(**kw):
    d = {"src": "../_images/a.png", "output": True, "figure": True, "caption": "Figure 1 Accuracy by hop.",
         "number": "Figure 1", "width": 600, "natural_width": 640}
    d.update(kw)
    return d


def table(**kw):
    d = {"index": 0, "scroll_width": 500, "client_width": 784, "scroller": None, "columns": ["task", "acc"],
         "nan_cells": [], "section": "Results"}
    d.update(kw)
    return d


def test_a_clean_page_passes(ch):
    assert ch.judge_measurements("p.html", page(images=[img()], tables=[table()])) == []


def test_a_page_that_never_reported_fails(ch):
    (msg,) = ch.judge_measurements("p.html", None)
    assert "p.html" in msg and "did not report" in msg


@pytest.mark.parametrize("bad, what", [
    (dict(figure=False, caption=None, number=None), "without a caption"),
    (dict(caption=None, number=None), "without a caption"),          # a <figure> with no <figcaption>
    (dict(number=None, caption="Accuracy by hop."), "without a number"),
])
def test_output_figure_needs_a_numbered_caption(ch, bad, what):
    (msg,) = ch.figure_problems("p.html", [img(**bad)])
    assert msg.startswith("p.html: ") and what in msg


def test_images_outside_notebook_outputs_are_not_figures(ch):
    # a logo or an inline image in the text is not a notebook figure
    assert ch.figure_problems("p.html", [img(output=False, figure=False, caption=None, number=None)]) == []


def test_table_cut_off_only_without_a_scroll_container(ch):
    wide = table(scroll_width=1220, client_width=784)
    (msg,) = ch.table_problems("p.html", [wide])
    assert "cut off" in msg and "1220" in msg and "784" in msg and "task, acc" in msg
    assert ch.table_problems("p.html", [dict(wide, scroller="div.output.text_html")]) == []
    assert ch.table_problems("p.html", [table(scroll_width=785, client_width=784)]) == []  # rounding


@pytest.mark.parametrize("cell", ["nan", "NaN", "None"])
def test_missing_value_cells_fail(ch, cell):
    (msg,) = ch.table_problems("p.html", [table(nan_cells=[cell, cell])])
    assert "2 cell(s)" in msg and cell in msg


def test_a_dash_is_a_fine_missing_value(ch):
    assert ch.table_problems("p.html", [table(nan_cells=[])]) == []


def test_every_javascript_error_is_reported(ch):
    errs = ["Uncaught SyntaxError: Identifier 'THEBE_JS_URL' has already been declared (p.html:60)",
            "failed to load http://127.0.0.1:1/_static/x.js"]
    msgs = ch.console_problems("p.html", errs)
    assert len(msgs) == 2 and "THEBE_JS_URL" in msgs[0] and "x.js" in msgs[1]


@pytest.mark.parametrize("text, what", [
    ("the angle {math}`\\theta` is", "{math}"),
    ("we found {glue:md}`n_runs` runs", "{glue}"),
    ("display $$x^2$$ math", "$$"),
])
def test_raw_source_text_fails(ch, text, what):
    (msg,) = ch.raw_text_problems("p.html", "before " + text + " after")
    assert what in msg and "visible" in msg


def test_plain_text_passes_the_raw_rules(ch):
    assert ch.raw_text_problems("p.html", "a price of $5 and a {set} of math") == []


def test_judge_collects_every_rule(ch):
    m = page(errors=["boom"], images=[img(figure=False, caption=None, number=None)],
             tables=[table(scroll_width=900, nan_cells=["nan"])], text="raw {glue:text}`x`")
    msgs = ch.judge_measurements("p.html", m)
    assert len(msgs) == 5, msgs


def test_probe_round_trip_through_a_dom_dump(ch):
    m = page(text="a </script> inside text", tables=[table()])
    dumped = json.dumps(m).replace("<", "\\u003c")
    dom = f'<html><body><p>x</p><script type="application/json" id="{ch.PROBE_ID}">{dumped}</script></body></html>'
    assert ch.extract_measurements(dom) == m
    assert ch.extract_measurements("<html><body></body></html>") is None


def test_probe_is_injected_first_in_head(ch):
    out = ch.inject_probe(b'<!DOCTYPE html><html><head lang="en"><script>const A = 1;</script></head></html>')
    head = out.index(b"<head")
    assert out.index(b"addEventListener('error'") < out.index(b"const A = 1")
    assert out.index(b"addEventListener('error'") > head
