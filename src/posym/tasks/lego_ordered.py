"""LEGO chains with the clauses in chain order (see :mod:`posym.tasks.lego` for every other choice).

A separate module because a registered task's module is named as the task (the command line finds tasks by
module name). The first clause is always in slot 0, so the data set balances over (answer, depth) only.
"""
from __future__ import annotations

from ..palette import OKABE_ITO
from .base import register_task
from .lego import LegoTask


@register_task
class LegoOrderedTask(LegoTask):
    """LEGO with the clauses shown in chain order: ``v1 = s1 1``, ``v2 = s2 v1``, ..."""

    name = "lego_ordered"
    task_id = 4
    colour = OKABE_ITO["sky_blue"]
    label = "LEGO (ordered)"
    ordered = True
    n_positions = 1
