"""The book's colours, with no plotting dependency (tasks and figures both use them).

Colours come from the Okabe-Ito palette, which stays distinguishable under the common forms of
colour-vision deficiency. The same meaning always gets the same colour: positional blue, symbolic
vermillion, mixed purple. A task's own colour is an attribute of the task (``posym.tasks``).
"""
from __future__ import annotations

# Okabe & Ito (2008), "Color Universal Design".
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
}

#: Semantic colours used across the book.
COLORS = {
    "positional": OKABE_ITO["blue"],
    "symbolic": OKABE_ITO["vermillion"],
    "mixed": OKABE_ITO["purple"],
    "entropy": OKABE_ITO["purple"],
    "accent": OKABE_ITO["orange"],
    "neutral": "#7F7F7F",
    "target_window": "#E3E3E3",
    "instruction_window": "#FFFFFF",
}

#: Default colour cycle (categorical data without a fixed meaning).
PALETTE = [OKABE_ITO[k] for k in ("blue", "vermillion", "green", "orange", "sky_blue", "purple", "yellow", "black")]

#: One colour per hop count 1..4 (used by every hop-resolved plot).
HOP_COLORS = {1: OKABE_ITO["sky_blue"], 2: OKABE_ITO["green"], 3: OKABE_ITO["orange"], 4: OKABE_ITO["purple"]}
