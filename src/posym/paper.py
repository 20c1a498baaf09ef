"""Values the papers report, read from their figures and tables, in one place.

Every chapter that sets our numbers beside the paper's takes the paper's from here.
"""
from __future__ import annotations

import pandas as pd

from . import theory


#: Figures quoted from Paper 2 (Urrutia et al., arXiv 2605.31558): Fig. 2A (best steps and the hop-wise curves),
#: Fig. 2C (purity counts at gamma = 0.1 and the order in which heads become pure), Fig. 7 (gamma = 0.05) and
#: the text on the purity rule and the entropy normalisation.  Steps are readings of the figures ("about 4.8k"),
#: not numbers printed in the paper.
PAPER = {
    "number": {
        "best_step": 4800,            # Fig. 2A, dashed line
        "one_hop_step": 2600,         # Fig. 2A: "1-hop is learned first (around 2.6k steps)"
        "hop_order": "1-hop, then 2-hop, then 3- and 4-hop",
        "positional_layers": (0, 1, 2, 3),   # Fig. 2C: 4 pure positional heads, L0-L3
        "positional_order": (1, 0, 2, 3),    # ... appearing in the order L1, L0, L2, L3
        "symbolic_layers": (4, 5, 6, 7, 8, 9, 10, 11),  # 8 pure symbolic heads, L4-L11
        "test_accuracy": 1.0,         # "both reach about 100 % test accuracy"
    },
    "letter": {
        "best_step": 3400,            # Fig. 2A
        "hop_order": "all hops together",
        "positional_layers": (),      # Fig. 2C: 0 positional heads
        "symbolic_layers": tuple(range(1, 12)),  # 11 pure symbolic heads, L1-L11; L0 never becomes pure
        "test_accuracy": 1.0,
    },
    "n_layer": 12,
    "gammas": (0.1, 0.05),            # App. E / Fig. 7
}


#: Paper 2, Table 1: weighted-average frequency ID and its frequency (rad/token) per layer, for the trained
#: Number and Letter models (one run each).  Transcribed from the PDF.
PAPER_TABLE1 = {
    "number": [(1, 1.0000), (2, 0.8660), (2, 0.8660), (2, 0.8660), (10, 0.2738), (39, 0.0042),
               (38, 0.0049), (38, 0.0049), (38, 0.0049), (37, 0.0056), (37, 0.0056), (38, 0.0049)],
    "letter": [(18, 0.0866), (32, 0.0115), (42, 0.0027), (37, 0.0056), (40, 0.0037), (38, 0.0049),
               (41, 0.0032), (38, 0.0049), (41, 0.0032), (39, 0.0042), (38, 0.0049), (40, 0.0037)],
}


#: Paper 2, Fig. 5A / Sec. 3.5: the angles used to plot Theorem 3.2's bounds (the text says theta = 0.8 for
#: Index, "frequency ID 2", whose exact value is 0.8660; Retrieval uses ID 42 = 0.0027 with |ALPH| = 8).
PAPER_FIG5A = {"index_theta": theory.INDEX_THETA, "retrieval_theta": theory.RETRIEVAL_THETA, "alph": 8, "n_max": 100}


#: Paper 2, Sec. 3.4 / Fig. 8 (read off the plot,): the Number model's layers 0-3 peak at values of
#: about 50-80 on the fastest frequencies.  The paper's values appear to lack the 1/sqrt(d_head) factor.
PAPER_PEAK_LOGIT = (50.0, 80.0)


#: Paper 2, Fig. 5B (controlled GPT-J, one run per task): accuracy vs input length read off the plot.
#: Number: "about 0.5 by 200-300 tokens" is entered at 250.
#: Letter: "above 90 % up to length 850" is the paper's own text (Sec. 3.6); the rest are plot read-offs,
#: good to about +-0.05.
PAPER_FIG5B = {
    "number": {250: 0.5, 500: 0.35, 1000: 0.2, 2000: 0.1, 5000: 0.03},
    "letter": {500: 0.95, 850: 0.90, 1500: 0.8, 3000: 0.65, 5000: 0.48},
}


def paper_points(task: str | None = None) -> pd.DataFrame:
    """:data:`PAPER_FIG5B` as a table: task, length, accuracy."""
    rows = [{"task": t, "length": L, "accuracy": a} for t, pts in PAPER_FIG5B.items() for L, a in pts.items()
            if task in (None, t)]
    return pd.DataFrame(rows)
