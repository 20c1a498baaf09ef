"""Parameters of the chapter ``book/llm.md`` (positional and symbolic heads of a real language model)."""
from posym.spec import ChapterSpec, Param, Required, register

_SCORES = "python scripts/llm_scores.py  (about 15 min on 2 CPU cores; see data/README.md)"
_PROBE = "python scripts/llm_probe.py  (about an hour on 2 CPU cores; see data/README.md)"


def _checks(p: dict):
    if p["n_freq_heads"] > 9:
        return "n_freq_heads", f"must be at most 9, got {p['n_freq_heads']}"
    lengths = p["probe_lengths"].split(",")
    if not all(x.strip().isdigit() and 1 <= int(x) <= 2000 for x in lengths):
        return "probe_lengths", (f"must be comma-separated window lengths between 1 and 2000, e.g. '12,24,48', "
                                 f"got {p['probe_lengths']!r}")
    return None


register(ChapterSpec(
    name="llm",
    params={
        "model": Param(str, "smollm2", "the GGUF model: SmolLM2-135M-Instruct (make venv) or Gemma-3-270M "
                       "(make models); the paper scale reads SmolLM2 results", choices=("smollm2", "gemma3")),
        "seed": Param(int, 0, "seed of the binding prompts", min=0, max=2**31 - 1),
        "n_prompts": Param(int, {"smoke": 16, "teaching": 64, "paper": 256},
                           "binding prompts for the scores (the paper scale reads the committed 256-prompt run)",
                           min=2, max=4096),
        "n_pairs": Param(int, 5, "name-colour pairs per binding prompt", min=2, max=8),
        "skip": Param(int, 1, "leading positions left out of the swaps (1: the first token, an attention sink)",
                      min=0, max=3),
        "n_freq_heads": Param(int, 3, "heads whose per-frequency scores are computed and drawn", min=1),
        "n_check": Param(int, {"smoke": 1, "teaching": 2, "paper": 2},
                         "prompts of the check against re-running the layer on swapped hidden states", min=1, max=8),
        "tool_prompts": Param(int, {"smoke": 8, "teaching": 32, "paper": 32},
                              "Number-style prompts scored in 'Score your own model' (posym scores)", min=2, max=1024),
        "probe_lengths": Param(str, {"smoke": "12,48", "teaching": "12,16,24,32,48,64",
                                     "paper": "12,16,24,32,48,64,80,100,150,200,300"},
                               "window lengths of the 1-hop probe (the paper scale reads data/llm/probe.csv)"),
        "probe_prompts": Param(int, {"smoke": 8, "teaching": 30, "paper": 100},
                               "prompts per task and length in the 1-hop probe (the paper scale reads data/llm/probe.csv)",
                               min=1, max=1000),
    },
    checks=(_checks,),
    requires={"paper": (
        Required("llm/smollm2_scores.parquet", _SCORES, "SmolLM2 per-head scores on 256 binding prompts"),
        Required("llm/smollm2_freq_scores.parquet", _SCORES, "SmolLM2 per-frequency scores"),
        Required("llm/probe.csv", _PROBE, "SmolLM2 answers to the 1-hop probe"),
        Required("llm/manifest.json", _SCORES, "provenance of the llm results"),
    )},
))
