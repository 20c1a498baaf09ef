"""Tidy tables for the book's pages and notebooks.

``table(df)`` wraps a DataFrame in an object that Jupyter (and the book) renders as tidy HTML:

* a missing value (NaN, None, ``pd.NA``, NaT) reads "–";
* numbers are formatted the same way down a column: integers with thousands separators, floats with one
  number of decimals per column (chosen from the column's magnitude, or ``digits``), very large or very
  small magnitudes in scientific notation;
* the table sits in a box that scrolls horizontally (``overflow-x: auto``), with the key columns (labels
  such as task, seed, layer) first, the first of them sticky on the left, so a wide table keeps its row labels in view;
* ``fold="title"`` puts the whole table in a ``<details>`` dropdown, for auxiliary tables.

The style travels with every table (a small inline ``<style>`` plus inline essentials), so a table looks
the same in the built book, in Jupyter and on Colab, offline. The plain-text and markdown forms
(``repr``, ``_repr_markdown_``) use the same formatted cells.

This module imports only the standard library, numpy and pandas.
"""
from __future__ import annotations

import html
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

MISSING = "–"
CSS_CLASS = "posym-table"
_MAX_KEY_CH = 40
_STYLE = (
    "<style>"
    ".posym-table-box{overflow-x:auto;max-width:100%;margin:0.5em 0 1em 0}"
    ".posym-table{border-collapse:separate;border-spacing:0;font-size:0.85em;margin:0;"
    "font-variant-numeric:tabular-nums}"
    ".posym-table th,.posym-table td{padding:0.25em 0.5em;border-bottom:1px solid "
    "var(--pst-color-border,#ddd);white-space:nowrap;vertical-align:top}"
    ".posym-table thead th{border-bottom:2px solid var(--pst-color-border,#bbb);text-align:left}"
    ".posym-table td.num,.posym-table th.num{text-align:right}"
    ".posym-table .key{position:sticky;z-index:1;background:var(--pst-color-background,#fff);"
    "overflow:hidden;text-overflow:ellipsis}"
    ".posym-table .key-last{border-right:1px solid var(--pst-color-border,#ccc)}"
    ".posym-table-caption{font-size:0.9em;margin:0.25em 0}"
    "details.posym-fold>summary{cursor:pointer;font-weight:600}"
    "</style>"
)


# -----------------------------------------------------------------------------
# Cell formatting

def is_missing(v: Any) -> bool:
    """NaN, None, pd.NA and NaT (not an empty string)."""
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, (float, np.floating)):
        return bool(np.isnan(v))
    try:
        return bool(pd.isna(v)) if np.ndim(v) == 0 else False
    except (TypeError, ValueError):
        return False


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _is_integral(v: Any) -> bool:
    if isinstance(v, (int, np.integer)):
        return True
    return isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer() and abs(v) < 1e15


def column_format(values: Sequence[Any], digits: int | None = None):
    """A function formatting every value of one column the same way (missing values give "–")."""
    nums = [v for v in values if not is_missing(v) and _is_number(v)]
    finite = [float(v) for v in nums if math.isfinite(float(v))]
    integral = bool(nums) and all(_is_integral(v) for v in nums if math.isfinite(float(v))) and digits is None

    def special(v):
        if is_missing(v):
            return MISSING
        if _is_number(v) and not math.isfinite(float(v)):
            return "∞" if v > 0 else "−∞"
        return None

    if integral:
        def fmt(v):
            s = special(v)
            if s is not None:
                return s
            return f"{int(v):,}" if _is_number(v) else _text(v)
        return fmt

    biggest = max((abs(x) for x in finite), default=0.0)
    smallest = min((abs(x) for x in finite if x != 0), default=0.0)
    scientific = digits is None and (biggest >= 1e6 or (0 < biggest < 1e-3))
    if digits is not None:
        decimals = int(digits)
    elif biggest == 0:
        decimals = 0
    else:
        decimals = min(4, max(0, 2 - math.floor(math.log10(biggest))))
        if smallest and smallest < 10 ** -decimals and not scientific:
            decimals = min(4, max(decimals, -math.floor(math.log10(smallest))))

    def fmt(v):
        s = special(v)
        if s is not None:
            return s
        if not _is_number(v):
            return _text(v)
        if scientific:
            return f"{float(v):.3g}"
        return f"{float(v):,.{decimals}f}"
    return fmt


def _text(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    return str(v)


def _is_numeric_column(values: Sequence[Any]) -> bool:
    present = [v for v in values if not is_missing(v)]
    return bool(present) and all(_is_number(v) for v in present)


# -----------------------------------------------------------------------------
# The table

class Table:
    """A formatted table; display it in Jupyter or on a page (``_repr_html_``)."""

    def __init__(self, df: pd.DataFrame, *, caption: str | None = None, key_columns: Sequence[str] | None = None,
                 digits: int | Mapping[str, int] | None = None, fold: str | None = None, index: bool = False):
        if not isinstance(df, pd.DataFrame):
            if isinstance(df, pd.Series):
                df = df.to_frame()
            else:
                raise TypeError(f"table() takes a pandas DataFrame or Series, got {type(df).__name__}")
        frame = df.copy()
        if isinstance(frame.columns, pd.MultiIndex):
            frame.columns = [" / ".join(str(c) for c in col if str(c) != "") for col in frame.columns]
        frame.columns = [str(c) for c in frame.columns]
        n_index = 0
        if index:
            names = [str(n) if n is not None else "" for n in frame.index.names]
            n_index = len(names)
            idx = frame.index.to_frame(index=False)
            idx.columns = [n if n else ("" if len(names) == 1 else f"level {i}") for i, n in enumerate(names)]
            frame = pd.concat([idx, frame.reset_index(drop=True)], axis=1)
        else:
            frame = frame.reset_index(drop=True)
        if len(set(frame.columns)) != len(frame.columns):
            raise ValueError(f"table(): duplicate column names {list(frame.columns)}")
        columns = list(frame.columns)
        if key_columns is None:
            if n_index:
                keys = columns[:n_index]
            else:
                keys = []
                for c in columns[:2]:
                    if _is_numeric_column(frame[c].tolist()):
                        break
                    keys.append(c)
        else:
            keys = [str(k) for k in key_columns]
            unknown = [k for k in keys if k not in columns]
            if unknown:
                raise KeyError(f"table(): key_columns {unknown} are not columns of the table ({columns})")
        frame = frame[keys + [c for c in columns if c not in keys]]
        if isinstance(digits, Mapping):
            unknown = [k for k in digits if str(k) not in frame.columns]
            if unknown:
                raise KeyError(f"table(): digits given for unknown columns {unknown}")
        if fold is not None and not str(fold).strip():
            raise ValueError("table(): fold needs a title (the dropdown's summary)")
        self.frame = frame
        self.keys = keys
        self.caption = caption
        self.fold = fold
        self.cells: dict[str, list[str]] = {}
        self.numeric: dict[str, bool] = {}
        for c in frame.columns:
            values = frame[c].tolist()
            d = digits.get(c) if isinstance(digits, Mapping) else digits
            fmt = column_format(values, d)
            self.cells[c] = [fmt(v) for v in values]
            self.numeric[c] = _is_numeric_column(values)

    # --- plain text / markdown -------------------------------------------------------------------
    def formatted(self) -> pd.DataFrame:
        """The table as strings, exactly as shown."""
        return pd.DataFrame(self.cells, columns=list(self.frame.columns))

    def __repr__(self) -> str:
        body = self.formatted().to_string(index=False) if len(self.frame.columns) else "(empty table)"
        head = f"{self.caption}\n" if self.caption else ""
        return head + body

    def _repr_markdown_(self) -> str:
        cols = list(self.frame.columns)
        esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines = ["| " + " | ".join(esc(c) for c in cols) + " |",
                 "| " + " | ".join("---:" if self.numeric[c] else "---" for c in cols) + " |"]
        for i in range(len(self.frame)):
            lines.append("| " + " | ".join(esc(self.cells[c][i]) for c in cols) + " |")
        text = "\n".join(lines)
        if self.caption:
            text = f"**{esc(self.caption)}**\n\n" + text
        if self.fold:
            text = f"<details><summary>{html.escape(self.fold)}</summary>\n\n{text}\n\n</details>"
        return text

    # --- HTML ------------------------------------------------------------------------------------
    def _key_offsets(self) -> dict[str, tuple[float, float]]:
        """(left offset in ch, width in ch) of the sticky key column: the first one only. A second sticky column
        would need the first's rendered width, which a proportional font makes unknown here, and a wrong offset
        lays it over its neighbour; the other key columns scroll with the table."""
        out, left = {}, 0.0
        for c in self.keys[:1]:
            n = min(_MAX_KEY_CH, max([len(c)] + [len(s) for s in self.cells[c]] + [1]))
            width = math.ceil(1.2 * n) + 1  # letters of a proportional font are wider than 1ch (a digit)
            out[c] = (left, width)
            left += width + 2.2  # + the cell's 2 x 0.5em padding (1em is about 2ch), and a little room
        return out

    def _cell(self, tag: str, text: str, col: str, offsets) -> str:
        cls = []
        style = ""
        if self.numeric.get(col) and tag == "td":
            cls.append("num")
        if col in offsets:
            left, width = offsets[col]
            cls.append("key")
            cls.append("key-last")
            style = (f' style="position:sticky;left:{left:g}ch;min-width:{width:g}ch;max-width:{width:g}ch;'
                     f'background:var(--pst-color-background,#fff)"')
        attr = f' class="{" ".join(cls)}"' if cls else ""
        return f"<{tag}{attr}{style}>{html.escape(text)}</{tag}>"

    def _repr_html_(self) -> str:
        offsets = self._key_offsets()
        cols = list(self.frame.columns)
        head = "".join(self._cell("th", c, c, offsets) for c in cols)
        rows = []
        for i in range(len(self.frame)):
            rows.append("<tr>" + "".join(self._cell("th" if c in offsets else "td", self.cells[c][i], c, offsets)
                                         for c in cols) + "</tr>")
        parts = [_STYLE]
        if self.caption:
            parts.append(f'<p class="posym-table-caption">{html.escape(self.caption)}</p>')
        parts.append(f'<div class="posym-table-box" style="overflow-x:auto;max-width:100%">'
                     f'<table class="{CSS_CLASS}"><thead><tr>{head}</tr></thead>'
                     f'<tbody>{"".join(rows)}</tbody></table></div>')
        out = "".join(parts)
        if self.fold:
            out = f'<details class="posym-fold"><summary>{html.escape(self.fold)}</summary>{out}</details>'
        return out


def table(df: pd.DataFrame, *, caption: str | None = None, key_columns: Sequence[str] | None = None,
          digits: int | Mapping[str, int] | None = None, fold: str | None = None, index: bool = False) -> Table:
    """A tidy display of ``df``: "–" for missing values, numbers formatted per column, horizontal scrolling
    with sticky key columns, and an optional dropdown.

    ``caption``: a line above the table. ``key_columns``: columns kept in view on the left (moved to the
    front); by default the index levels with ``index=True``, otherwise the leading non-numeric columns (at most
    two); ``[]`` for none. ``digits``: decimals of every float column, or a ``{column: decimals}`` dict
    (default: from each column's magnitude). ``fold``: the title of a dropdown the table is folded into.
    ``index``: show the index (as the first, key, columns).
    """
    return Table(df, caption=caption, key_columns=key_columns, digits=digits, fold=fold, index=index)


def float_digits(df: pd.DataFrame, digits: int) -> dict[str, int]:
    """``{column: digits}`` for the float columns of ``df`` (named as :func:`table` names them), to keep a
    chosen number of decimals there while integer and text columns keep their own format:
    ``table(df, digits=float_digits(df, 3))``."""
    out = {}
    for col in df.columns:
        values = df[col]
        if isinstance(values, pd.DataFrame) or not pd.api.types.is_float_dtype(values.dtype):
            continue
        finite = values.dropna()
        if len(finite) and (finite == finite.round()).all() and (finite.abs() >= 2).any():
            continue  # integers stored as floats (e.g. after a pivot with gaps)
        name = " / ".join(str(c) for c in col if str(c) != "") if isinstance(col, tuple) else str(col)
        out[name] = digits
    return out


def rounded_table(df: pd.DataFrame, decimals: int, **kwargs) -> Table:
    """:func:`table` of ``df`` with its float columns shown to ``decimals`` places (what ``df.round(decimals)``
    shows), integer and text columns in their own format; ``kwargs`` go to :func:`table`."""
    return table(df.round(decimals), digits=float_digits(df, decimals), **kwargs)
