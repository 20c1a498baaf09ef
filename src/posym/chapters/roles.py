"""Parameters of the "Head roles and basic functions" chapter (book/roles.md)."""
from posym.spec import ChapterSpec, Param, Required, register

_HOW = "python scripts/paper_runs.py --scale paper --seeds 0-4 --device cuda  (see data/README.md)"


def _checks(p: dict):
    if p["n_prompts"] % 4:
        return "n_prompts", f"must be a multiple of 4 (hop-balanced prompts), got {p['n_prompts']}"
    return None


register(ChapterSpec(
    name="roles",
    params={
        "hops": Param(int, 3, "hop count of the example whose information flow is drawn", min=1, max=4),
        "example": Param(int, 0, "which test prompt with that hop count (0 = the first one of the test split)",
                         min=0, max=99),
        "n_prompts": Param(int, {"smoke": 100, "teaching": 200, "paper": 300},
                           "test prompts on which the trained heads are compared with the basic functions",
                           min=4, max=2_000),
        "n_seeds": Param(int, {"smoke": 1, "teaching": 1, "paper": 5},
                         "seeds whose final heads are classified (trained at smoke/teaching, read at paper)",
                         min=1, max=5),
        "gamma": Param(float, 0.1, "purity tolerance: pure positional iff pos >= 1 - gamma and sym <= gamma",
                       min=0.0, max=0.5),
    },
    requires={"paper": tuple(
        [Required(f"paper/{t}-s0/final.pt", _HOW, f"the final {t.capitalize()} checkpoint, seed 0")
         for t in ("number", "letter")]
        + [Required(f"paper/{t}-s{s}/scores.parquet", _HOW, "positional/symbolic scores per checkpoint")
           for t in ("number", "letter") for s in range(5)])},
    checks=(_checks,),
))
