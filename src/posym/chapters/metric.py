"""Parameters of the chapter ``book/metric.md`` (Paper 1's definitions, the metric and the canonical tasks)."""
from posym.spec import ChapterSpec, Param, Required, register

_HOW = "python scripts/canonical_sweep.py  (about 25 min on one CPU thread; see data/canonical/README.md)"


def _checks(params: dict):
    from posym.metric_chapter import parse_specs

    for name in ("freqs", "pi_freqs"):
        try:
            parse_specs(params[name])
        except ValueError as e:
            return name, f"must be comma-separated frequency specs (0..31, 'k1+k2' or 'nope'): {e}"
    if params["score_size"] > params["eval_size"]:
        return "score_size", f"must be at most eval_size ({params['eval_size']}), got {params['score_size']}"
    return None


register(ChapterSpec(
    name="metric",
    params={
        "seed": Param(int, 0, "seed of the random toy heads and models, and the first training seed",
                      min=0, max=2**31 - 1),
        "n_heads": Param(int, {"smoke": 500, "teaching": 1000, "paper": 2000},
                         "random toy heads in the exclusion-principle scatter", min=10, max=20_000),
        "n_prompts": Param(int, {"smoke": 4, "teaching": 8, "paper": 32},
                           "prompts of the fast-vs-re-run check of the metric", min=1, max=256),
        "freqs": Param(str, {"smoke": "2,8,nope", "teaching": "0,4,6,8,10,12,16,nope",
                             "paper": "0,2,4,6,8,10,12,14,16,31,nope"},
                       "frequency indices (0 = fastest of 32) swept for Index and Retrieval; 'nope' = no RoPE "
                       "(the paper scale reads them from the committed sweep)"),
        "pi_freqs": Param(str, {"smoke": "10", "teaching": "6,10,14",
                                "paper": "0,2,4,6,8,10,12,14,16,31,nope"},
                          "frequency indices swept for partial induction, each alone and with the zero channel"),
        "n_seeds": Param(int, {"smoke": 1, "teaching": 1, "paper": 3},
                         "training seeds per head (the committed sweep has 3)", min=1, max=5),
        "steps": Param(int, {"smoke": 300, "teaching": 600, "paper": 600},
                       "training steps per head (the committed sweep used 600)", min=10, max=100_000),
        "eval_size": Param(int, {"smoke": 1024, "teaching": 2048, "paper": 4096},
                           "held-out prompts per head for the accuracy", min=64, max=65_536),
        "score_size": Param(int, {"smoke": 32, "teaching": 64, "paper": 128},
                            "held-out prompts per head for s_pos / s_sym", min=1, max=4096),
    },
    requires={"paper": (Required("canonical/sweep.parquet", _HOW, "the canonical-task frequency sweep"),)},
    checks=(_checks,),
))
