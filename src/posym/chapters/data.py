"""Parameters of the "Data" chapter (book/data.md)."""
from posym.spec import ChapterSpec, Param, fmt as _fmt, register


def _data_checks(params: dict) -> tuple[str, str] | None:
    from posym.tasks import SPLIT_SIZES

    size = SPLIT_SIZES[params["split"]]
    if params["n_samples"] > size:
        return "n_samples", (f"must be at most the size of split {params['split']!r} ({_fmt(size)}), "
                             f"got {_fmt(params['n_samples'])}")
    return None


register(ChapterSpec(
    name="data",
    params={
        "seed": Param(int, 0, "base seed of the data sets (the paper's splits use 0)", min=0, max=2**31 - 1),
        "split": Param(str, "train", "split whose balance is measured", choices=("train", "val", "test")),
        "n_samples": Param(int, {"smoke": 4_000, "teaching": 20_000, "paper": 432_000},
                           "prompts per task used for the balance statistics", min=1),
        "n_examples": Param(int, 4, "worked examples drawn per task", min=1, max=8),
        "n_swap": Param(int, {"smoke": 1_000, "teaching": 2_000, "paper": 20_000},
                        "prompts per task in the swap experiment", min=1, max=45_600),
    },
    checks=(_data_checks,),
))
