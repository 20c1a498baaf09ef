"""Parameters of the appendix ``book/teaching.md`` (the search for the teaching scale, issue 11).

The chapter trains nothing: it summarises the committed table ``data/teaching/search.csv`` with
:mod:`posym.teaching`, so its parameters are the same at every scale.
"""
from posym.spec import ChapterSpec, Param, Required, register

_PAPER = "posym reproduce --scale paper  (see data/README.md)"
_HOW = "python scripts/teaching_search.py --grid explore --jobs 2  (see data/teaching/README.md)"

register(ChapterSpec(
    name="teaching",
    params={
        "gamma": Param(float, 0.1, "purity tolerance of the head classes (the search used 0.1; 0.2 is looser)",
                       min=0.0, max=0.5),
        "threshold": Param(float, 0.9, "validation accuracy every hop count must reach (the search used 0.9)",
                           min=0.5, max=1.0),
    },
    requires={s: (Required("teaching/search.csv", _HOW, "one row per training run of the search"),)
              + tuple(Required(f"paper/{t}-s{k}/scores.parquet", _PAPER, "paper-scale scores, for comparison")
                      for t in ("number", "letter") for k in range(5))
              for s in ("smoke", "teaching", "paper")},
))
