"""List sorting with lists of 18 numbers (see :mod:`posym.tasks.sorting` for the layout and every choice).

A separate module because a registered task's module is named as the task. The same prompt, balancing and
solver as ``sorting``, with lists of ``LIST_LEN = 18`` distinct numbers from 0..47 instead of 9 (21 tokens):
the sorted list is twice as dense (mean gap between neighbours about 2.5 instead of 4.8). The source study ties
the heads' modes to the gaps between neighbouring numbers; in this project's trials (``data/sorting/README.md``)
the two heads divide the numbers between them with lists of 18 and stay largely redundant with lists of 9.

Teaching model: the ``sorting`` model (one layer, two heads, attention only, d 64) **without dropout** (with the
model's default 0.1 the two heads learn the same job), trained 3,000 steps of 128 fresh prompts.
"""
from __future__ import annotations

from ..palette import OKABE_ITO
from .base import register_task
from .sorting import SortingTask

LIST_LEN = 18


@register_task
class SortingLongTask(SortingTask):
    """``sorting`` with lists of 18 numbers."""

    name = "sorting_long"
    task_id = 7
    colour = OKABE_ITO["yellow"]
    label = "List sorting (lists of 18)"
    list_len = LIST_LEN  # the layout (seq_len, n_positions, n_draws) follows, in SortingTask.__init_subclass__
    teaching_model = {**SortingTask.teaching_model, "attn_pdrop": 0.0, "resid_pdrop": 0.0}
    teaching_train = {"steps": 3000, "checkpoint_every": 100, "train_size": 384_000}  # one pass, fresh prompts
