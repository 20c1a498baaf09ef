"""Two LEGO chains with fused sign tokens, each chain in chain order (see :mod:`posym.tasks.lego_fused`).

A separate module because a registered task's module is named as the task. The queried chain fills the first or
the second block of 3 clauses (the other chain the other block), so the data set balances over (block, answer,
depth); every clause's parent is the clause just before it.
"""
from __future__ import annotations

from ..palette import OKABE_ITO
from .base import register_task
from .lego_fused import N_CHAINS, LegoFusedTask


@register_task
class LegoFusedOrderedTask(LegoFusedTask):
    """``lego_fused`` with each chain shown in chain order, one chain after the other."""

    name = "lego_fused_ordered"
    task_id = 6
    colour = OKABE_ITO["black"]
    label = "LEGO, two chains (ordered)"
    ordered = True
    n_positions = N_CHAINS
