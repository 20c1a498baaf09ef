"""Parameters of the "Learning dynamics" chapter (book/dynamics.md)."""
from posym.spec import ChapterSpec, Param, Required, register

_HOW = "python scripts/paper_runs.py --scale paper --seeds 0-4 --device cuda  (see data/README.md)"


def _checks(p: dict):
    if p["n_prompts"] % 4:
        return "n_prompts", f"must be a multiple of 4 (hop-balanced prompts), got {p['n_prompts']}"
    if p["seed"] >= p["n_seeds"]:
        return "seed", f"must be one of the runs shown, 0..{p['n_seeds'] - 1} (n_seeds = {p['n_seeds']}), got {p['seed']}"
    return None


register(ChapterSpec(
    name="dynamics",
    params={
        "n_seeds": Param(int, {"smoke": 2, "teaching": 1, "paper": 5},
                         "training seeds per task (trained at smoke/teaching, read from data/paper at paper)",
                         min=1, max=5),
        "seed": Param(int, 0, "the run drawn boldly and annotated in the purity figures", min=0, max=4),
        "n_prompts": Param(int, {"smoke": 100, "teaching": 200, "paper": 400},
                           "test prompts of the metric for the runs trained here (data/paper used 400)",
                           min=4, max=2_000),
        "threshold": Param(float, 0.9, "accuracy at which a hop count counts as learned", min=0.5, max=1.0),
        "ci": Param(str, "t", "confidence interval over seeds: Student-t or percentile bootstrap",
                    choices=("t", "bootstrap")),
    },
    requires={"paper": tuple(
        [Required(f"paper/{t}-s{s}/{f}", _HOW, what) for t in ("number", "letter") for s in range(5)
         for f, what in (("eval.csv", "validation accuracy per checkpoint"),
                         ("scores.parquet", "positional/symbolic scores per checkpoint"))]
        + [Required("paper/number-s0/final.pt", _HOW, "the final Number checkpoint, seed 0")])},
    checks=(_checks,),
))
