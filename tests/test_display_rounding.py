"""posym.display.rounded_table: what ``df.round(k)`` shows, in a tidy table."""
from __future__ import annotations

import pandas as pd

from posym.display import float_digits, rounded_table


def test_rounded_table_keeps_the_chosen_decimals_for_floats_only():
    df = pd.DataFrame({"task": ["a", "b"], "n": [3, 1200], "acc": [0.99944, 1.0], "step": [1700.0, float("nan")],
                       "share": [0.0, 1.0]})
    assert float_digits(df, 4) == {"acc": 4, "share": 4}   # step holds integers stored as floats
    t = rounded_table(df, 4)
    f = t.formatted()
    assert f["acc"].tolist() == ["0.9994", "1.0000"] and f["share"].tolist() == ["0.0000", "1.0000"]
    assert f["n"].tolist() == ["3", "1,200"] and f["step"].tolist() == ["1,700", "–"]


def test_float_digits_names_flattened_column_levels_as_table_does():
    df = pd.DataFrame([[0.123456, 2]], columns=pd.MultiIndex.from_tuples([("accuracy", True), ("n", True)]))
    assert float_digits(df, 3) == {"accuracy / True": 3}
    assert rounded_table(df, 3).formatted().iloc[0].tolist() == ["0.123", "2"]
