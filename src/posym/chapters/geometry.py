"""Parameters of the chapter ``book/geometry.md`` (RoPE geometry, frequency use, discrepancy)."""
from posym.spec import ChapterSpec, Param, Required, register

_RUNS = [f"{task}-s{seed}" for task in ("number", "letter") for seed in range(5)]
_HOW = "python scripts/paper_runs.py --scale paper --seeds 0-4 (see data/README.md)"

def _checks(params: dict):
    if params["n_prompts"] % 4:
        return "n_prompts", f"must be a multiple of 4 (hop-balanced prompts), got {params['n_prompts']}"
    return None


register(ChapterSpec(
    name="geometry",
    params={
        "seed": Param(int, 0, "training seed of the small models (smoke and teaching scales)", min=0, max=2**31 - 1),
        "n_check": Param(int, {"smoke": 100, "teaching": 500, "paper": 1000},
                         "random task prompts per length in the checks of Theorem 3.1 (three lengths)", min=4),
        "n_check_all": Param(int, {"smoke": 20, "teaching": 100, "paper": 200},
                             "prompts per length for the every-position check of Theorem 3.1", min=4),
        "n_max": Param(int, {"smoke": 200, "teaching": 300, "paper": 400},
                       "largest sequence length of the discrepancy curves", min=20, max=5000),
        "n_prompts": Param(int, {"smoke": 32, "teaching": 100, "paper": 400},
                           "prompts of the positional/symbolic metric of the small models (the paper scale "
                           "reads the committed 400-prompt results)", min=4, max=2000),
    },
    checks=(_checks,),
    requires={"paper": tuple(
        Required(f"paper/{run}/{f}", _HOW, what)
        for run in _RUNS
        for f, what in (("freq_scores.parquet", "per-frequency scores through training"),
                        ("eval.csv", "validation accuracy through training"),
                        ("geometry.parquet", "layer-1 queries and keys on the dominant RoPE plane"))
    )},
))
