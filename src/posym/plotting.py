"""One figure style for the whole book, and the hop-chain drawing of the data chapter.

Colours come from the Okabe-Ito palette, which stays distinguishable under the common forms of
colour-vision deficiency. The same meaning always gets the same colour:

* positional (and the positional Number task): blue
* symbolic (and the symbolic Letter task): vermillion
* the target window of a prompt: light grey, as in the paper's figures

Use :func:`apply_style` once per notebook (``posym.book.setup`` does it for you) and take colours
from :data:`COLORS` / :data:`PALETTE` rather than typing hex codes.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib as mpl
import matplotlib.colors  # noqa: F401  (mpl.colors)
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, Rectangle
from matplotlib.path import Path

from .palette import COLORS, HOP_COLORS, OKABE_ITO, PALETTE  # noqa: F401  (re-exported)


def task_color(task: str) -> str:
    """Colour of a registered task (its ``colour`` attribute)."""
    from .tasks import get_task
    return get_task(task).colour


def apply_style() -> None:
    """Apply the book's figure style (seaborn theme, colour cycle, sizes).

    Idempotent; changes only matplotlib/seaborn global settings.
    """
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, font="DejaVu Sans")
    mpl.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "figure.figsize": (7.0, 3.6),
        "figure.autolayout": False,
        "figure.constrained_layout.use": True,
        "axes.titlesize": "medium",
        "axes.titleweight": "bold",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
        "image.cmap": "cividis",  # perceptually uniform and colour-blind safe
    })


def tint(color: str, amount: float = 0.5) -> tuple[float, float, float]:
    """``color`` mixed with white (``amount`` = 1 keeps the colour, 0 gives white)."""
    r, g, b = mpl.colors.to_rgb(color)
    return (1 - amount + amount * r, 1 - amount + amount * g, 1 - amount + amount * b)


def _arc_label(tok: str) -> str:
    """What the reader 'reads' at a chain node: ``-k`` for an integer, the looked-up letter otherwise."""
    if tok.isdigit():
        return f"\u2212{tok}"
    if len(tok) >= 2:
        return tok[1]
    return tok


def draw_hop_chain(
    sample,
    ax: plt.Axes | None = None,
    *,
    title: str | None = None,
    color: str | None = None,
    target_window: int = 8,
    show_positions: bool = True,
    show_labels: bool = True,
) -> plt.Axes:
    """Draw a prompt as a row of token boxes with one arc per hop (like Fig. 1 of Urrutia et al., 2026).

    ``sample`` needs ``tokens`` (sequence of str), ``chain`` (positions visited, starting at the query
    and ending at the answer) and optionally ``answer``. The target window (the first
    ``target_window`` tokens, more after :meth:`Task.extend_target_window`) is shaded grey, the query
    has a thick outline and the answer box is filled with ``color``. Each arc starts at the token
    that is read and ends at the token it points to; it is labelled with what the reader uses to
    jump (``-6``: six positions back; ``c``: the token whose first letter is ``c``).

    Returns the Axes; the arcs are the Axes' :class:`~matplotlib.patches.FancyArrowPatch` patches.
    """
    tokens: Sequence[str] = tuple(sample.tokens)
    chain: Sequence[int] = tuple(int(p) for p in sample.chain)
    n = len(tokens)
    if n == 0:
        raise ValueError("cannot draw an empty prompt")
    if not chain or any(not 0 <= p < n for p in chain):
        raise ValueError(f"chain {chain} does not index a prompt of {n} tokens")
    color = color or COLORS["accent"]
    # Extended prompts keep 9 instruction+query tokens at the end; everything before is target window.
    n_target = n - (17 - target_window) if n > 17 else target_window
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.5 * n + 0.6), 2.3))

    box_w, box_h = 0.86, 0.62
    for i, tok in enumerate(tokens):
        face = COLORS["target_window"] if i < n_target else COLORS["instruction_window"]
        lw = 1.0
        if i == chain[-1]:
            face = tint(color, 0.45)
        if i == chain[0]:
            lw = 2.6
        ax.add_patch(Rectangle((i - box_w / 2, -box_h / 2), box_w, box_h, facecolor=face,
                               edgecolor="black", linewidth=lw, zorder=2))
        fs = 11 if len(tok) <= 2 else 8
        ax.text(i, 0, tok, ha="center", va="center", fontsize=fs, zorder=3,
                fontweight="bold" if i in chain else "normal")
        if show_positions:
            ax.text(i, -box_h / 2 - 0.18, str(i), ha="center", va="top", fontsize=9, color="#555555")

    max_h = 0.0
    for src, dst in zip(chain[:-1], chain[1:]):
        dist = abs(src - dst)
        h = 0.35 + 0.11 * dist  # higher arcs for longer jumps
        max_h = max(max_h, h)
        y0 = box_h / 2
        # a symmetric arch in data coordinates (cubic Bezier): up from the reader, down onto the target
        path = Path([(src, y0), (src, y0 + h * 4 / 3), (dst, y0 + h * 4 / 3), (dst, y0)],
                    [Path.MOVETO, Path.CURVE4, Path.CURVE4, Path.CURVE4])
        arrow = FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=11, linewidth=1.5,
                                color=color, zorder=4, shrinkA=0, shrinkB=0)
        ax.add_patch(arrow)
        if show_labels:
            ax.text((src + dst) / 2, box_h / 2 + h + 0.06, _arc_label(tokens[src]), ha="center",
                    va="bottom", fontsize=9, color=color, fontweight="bold")

    ax.set_xlim(-0.7, n - 0.3)
    ax.set_ylim(-box_h / 2 - 0.55, box_h / 2 + max_h + 0.45)
    ax.set_aspect("auto")
    ax.axis("off")
    if title is None and getattr(sample, "answer", None) is not None:
        hops = len(chain) - 1
        title = f"{hops} hop{'s' if hops != 1 else ''} \u2192 answer {sample.answer!s} at position {chain[-1]}"
    if title:
        ax.set_title(title, fontsize=10, fontweight="normal", loc="left")
    return ax


def chain_arrows(ax: plt.Axes) -> list[FancyArrowPatch]:
    """The hop arcs drawn on ``ax`` by :func:`draw_hop_chain` (useful in tests)."""
    return [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
