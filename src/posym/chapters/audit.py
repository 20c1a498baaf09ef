"""Parameters of the appendix ``book/audit.md`` (data audit: shortcuts and biases, issue 12)."""
from posym.spec import ChapterSpec, Param, Required, register

_PAPER = "posym reproduce --scale paper  (see data/README.md; only seed 0's final.pt is committed)"
_AUDIT = "python -m posym.audit --device cuda  (writes data/audit/ with a manifest)"

_MODELS = tuple(Required(f"paper/{t}-s0/final.pt", _PAPER, f"the final {t.capitalize()} checkpoint, seed 0")
                for t in ("number", "letter"))

register(ChapterSpec(
    name="audit",
    params={
        "n_train": Param(int, {"smoke": 5_000, "teaching": 20_000, "paper": 100_000},
                         "training prompts per task for the statistics and for fitting the shortcut solvers",
                         min=500, max=432_000),
        "n_model": Param(int, {"smoke": 200, "teaching": 1_000, "paper": 2_400},
                         "validation prompts per task on which the seed-0 models are compared with the shortcuts "
                         "(computed here unless data/audit/ holds the committed tables)", min=50, max=2_400),
        "n_variant": Param(int, {"smoke": 100, "teaching": 500, "paper": 1_000},
                           "test prompts per shortcut-free variant (computed here unless data/audit/ holds them)",
                           min=20, max=45_600),
        "curves": Param(bool, {"smoke": False, "teaching": True, "paper": True},
                        "compare the learning curves of all five seeds with the shortcut floors (about 30 s per task)"),
    },
    requires={"smoke": _MODELS, "teaching": _MODELS,
              "paper": _MODELS + (Required("audit/manifest.json", _AUDIT,
                                           "the committed audit tables (full val and test splits)", optional=True),)},
))
