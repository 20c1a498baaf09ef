"""posym.display.table: tidy HTML tables (missing values, number formats, scrolling, sticky keys, dropdowns)."""
from __future__ import annotations

import html.parser
import math

import numpy as np
import pandas as pd
import pytest

from posym import display


class Cells(html.parser.HTMLParser):
    """The text of every th/td, row by row, and the attributes of the elements seen."""

    def __init__(self):
        super().__init__()
        self.rows, self.tags, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def cells(t):
    p = Cells()
    p.feed(t._repr_html_())
    return p


def test_missing_values_read_a_dash_never_nan():
    df = pd.DataFrame({"task": ["number", None, "letter"], "acc": [0.5, np.nan, 1.0],
                       "n": pd.array([1, None, 3], dtype="Int64"), "when": [pd.NaT, pd.Timestamp(0), pd.NaT]})
    p = cells(display.table(df))
    body = p.rows[1:]
    flat = [c for r in body for c in r]
    assert not {"nan", "NaN", "None", "<NA>", "NaT"} & set(flat)
    assert body[1][:3] == ["–", "–", "–"]
    assert body[0][0] == "number" and body[0][3] == "–"


def test_numbers_are_formatted_per_column():
    df = pd.DataFrame({"count": [1200, 35, 7], "rate": [0.5, 0.123456, 1.0], "big": [2.5e7, 1e6, 3.3e6],
                       "tiny": [1.8e-7, 2e-5, 0.0], "ratio": [12.25, 3.5, 100.0], "whole": [3.0, 4.0, np.nan]})
    t = display.table(df)
    f = t.formatted()
    assert list(f["count"]) == ["1,200", "35", "7"]
    assert list(f["rate"]) == ["0.50", "0.12", "1.00"]             # 3 significant digits of the largest
    assert list(display.table(pd.DataFrame({"r": [0.5, 0.123456]})).formatted()["r"]) == ["0.500", "0.123"]
    assert list(f["big"]) == ["25,000,000", "1,000,000", "3,300,000"]  # integral floats read as integers
    assert list(display.table(pd.DataFrame({"b": [2.5e7 + 0.5, 1.5e6]})).formatted()["b"]) == ["2.5e+07", "1.5e+06"]
    assert list(f["tiny"]) == ["1.8e-07", "2e-05", "0"]
    assert list(f["ratio"]) == ["12", "4", "100"]                  # largest 100: no decimals
    assert list(f["whole"]) == ["3", "4", "–"]                     # integral floats read as integers


def test_digits_overrides_the_decimals():
    df = pd.DataFrame({"a": [0.123456, 2.0], "b": [10.5, 11.25]})
    assert list(display.table(df, digits=2).formatted()["a"]) == ["0.12", "2.00"]
    f = display.table(df, digits={"b": 3}).formatted()
    assert list(f["b"]) == ["10.500", "11.250"] and list(f["a"]) == ["0.12", "2.00"]
    with pytest.raises(KeyError, match="unknown columns"):
        display.table(df, digits={"zzz": 1})


def test_infinities_and_booleans():
    df = pd.DataFrame({"x": [math.inf, -math.inf, 1.5], "ok": [True, False, True]})
    f = display.table(df).formatted()
    assert list(f["x"]) == ["∞", "−∞", "1.50"] and list(f["ok"]) == ["yes", "no", "yes"]


def test_scroll_box_and_sticky_keys():
    df = pd.DataFrame({"task": ["number", "letter"], "seed": [0, 1], **{f"c{i}": [i * 0.1, i * 0.2] for i in range(20)}})
    h = display.table(df, key_columns=["task", "seed"])._repr_html_()
    assert 'class="posym-table-box" style="overflow-x:auto' in h
    p = cells(display.table(df, key_columns=["task", "seed"]))
    sticky = [a for tag, a in p.tags if tag in ("th", "td") and "position:sticky" in a.get("style", "")]
    assert len(sticky) == 1 * 3  # the first key column stays in view (header + two rows); the others scroll
    lefts = sorted({a["style"].split("left:")[1].split(";")[0] for a in sticky})
    assert lefts == ["0ch"]
    assert p.rows[1][:2] == ["number", "0"]


def test_default_keys_are_the_leading_label_columns():
    df = pd.DataFrame({"acc": [0.5], "task": ["number"], "layer": ["L0"]})
    assert display.table(df).keys == []                     # first column numeric: no key
    assert display.table(df[["task", "layer", "acc"]]).keys == ["task", "layer"]
    assert display.table(df[["task", "layer", "acc"]], key_columns=[]).keys == []
    t = display.table(df, key_columns=["layer"])            # moved to the front
    assert list(t.frame.columns) == ["layer", "acc", "task"]
    with pytest.raises(KeyError, match="not columns"):
        display.table(df, key_columns=["nope"])


def test_index_becomes_key_columns():
    df = pd.DataFrame({"acc": [0.9, 0.8]}, index=pd.MultiIndex.from_tuples([("number", 0), ("letter", 1)],
                                                                             names=["task", "seed"]))
    t = display.table(df, index=True)
    assert t.keys == ["task", "seed"] and cells(t).rows[0] == ["task", "seed", "acc"]
    assert "task" not in display.table(df).frame.columns


def test_fold_caption_and_escaping():
    df = pd.DataFrame({"name": ["<b>x</b>"], "v": [1]})
    h = display.table(df, caption="Runs & seeds", fold="All runs")._repr_html_()
    assert h.startswith('<details class="posym-fold"><summary>All runs</summary>') and h.endswith("</details>")
    assert "Runs &amp; seeds" in h and "&lt;b&gt;x&lt;/b&gt;" in h and "<b>x" not in h
    with pytest.raises(ValueError, match="title"):
        display.table(df, fold=" ")


def test_text_and_markdown_forms_use_the_same_cells():
    df = pd.DataFrame({"task": ["a|b", "c"], "acc": [0.5, np.nan]})
    t = display.table(df, caption="Accuracy")
    r = repr(t)
    assert r.splitlines()[0] == "Accuracy" and "–" in r and "nan" not in r.lower()
    md = t._repr_markdown_()
    assert "| task | acc |" in md and "| --- | ---: |" in md and "a\\|b" in md and "| c | – |" in md


def test_series_multiindex_columns_and_bad_input():
    s = pd.Series([1.5, 2.5], name="x")
    assert list(display.table(s).formatted()["x"]) == ["1.50", "2.50"]
    df = pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("acc", "mean"), ("acc", "sd")]))
    assert list(display.table(df).frame.columns) == ["acc / mean", "acc / sd"]
    with pytest.raises(TypeError, match="DataFrame"):
        display.table([[1, 2]])


def test_display_imports_no_chapter_or_torch_module():
    import subprocess
    import sys
    code = ("import sys, posym.display; bad = [m for m in sys.modules if m.startswith(('torch', 'matplotlib')) "
            "or m.startswith('posym.') and m not in ('posym.display',)]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
