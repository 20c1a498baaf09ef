"""Parameters of the chapter ``book/length.md`` (length generalisation and discrepancy-based break prediction)."""
from posym.spec import ChapterSpec, Param, Required, register

_HOW = "python scripts/paper_runs.py --scale paper --seeds 0-4 (see data/README.md)"


def _checks(params: dict):
    for name in ("n_prompts", "n_margin", "n_static"):
        if params[name] % 4:
            return name, f"must be a multiple of 4 (hop-balanced prompts), got {params[name]}"
    if params["margin_max_length"] > params["max_length"]:
        return "margin_max_length", (f"must be at most max_length ({params['max_length']}), "
                                     f"got {params['margin_max_length']}")
    return None


register(ChapterSpec(
    name="length",
    params={
        "seed": Param(int, 0, "training seed of the small models (smoke and teaching scales)", min=0, max=2**31 - 1),
        "n_prompts": Param(int, {"smoke": 64, "teaching": 200, "paper": 500},
                           "hop-balanced prompts per length for the accuracy curves (a multiple of 4; the paper "
                           "scale reads the committed 500-prompt curves)", min=4, max=45_600),
        "max_length": Param(int, {"smoke": 300, "teaching": 1000, "paper": 5000},
                            "longest prompt of the accuracy curves (tokens)", min=25, max=5000),
        "n_margin": Param(int, {"smoke": 32, "teaching": 64, "paper": 40},
                          "prompts per length for the key heads' margins on long prompts (a multiple of 4)",
                          min=4, max=2000),
        "margin_max_length": Param(int, {"smoke": 200, "teaching": 1000, "paper": 1500},
                                   "longest prompt of the margin analysis (tokens)", min=25, max=5000),
        "n_static": Param(int, {"smoke": 64, "teaching": 200, "paper": 200},
                          "17-token prompts for the margins predicted without long prompts (a multiple of 4)",
                          min=4, max=2000),
    },
    checks=(_checks,),
    requires={"paper": tuple(
        [Required(f"paper/{task}-s{seed}/length.parquet", _HOW, "accuracy vs length of the final model")
         for task in ("number", "letter") for seed in range(5)]
        + [Required(f"paper/{task}-s0/final.pt", _HOW, "the final checkpoint of seed 0")
           for task in ("number", "letter")]
    )},
))
