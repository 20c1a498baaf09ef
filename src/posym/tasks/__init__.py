"""Tasks as plug-ins: every module of this package defines and registers one task.

``posym.tasks.get_task("number")`` returns a registered task; :func:`task_names` lists them. To add a
task, write one module here with a :class:`Task` subclass decorated by :func:`register_task` (see
``number.py``); importing the package imports every module in it, so nothing else changes. The data
sets (:class:`TaskDataset`), the balanced evaluation sets and the tensors are shared by all tasks
(``base.py``); ``window.py`` holds the 17-token layout of Paper 2's Number and Letter tasks.
"""
import importlib
import pkgutil

from .base import (N_TOTAL, PAD, SPLIT_OFFSETS, SPLIT_SIZES, Sample, Task, TaskDataset, Vocab,  # noqa: F401
                   balance_table, balanced_eval_set, get_task, register_task, task_names, to_tensors,
                   unregister_task)
from .window import (INSTRUCTION_WINDOW, MAX_HOPS, QUERY_POS, SEQ_LEN, TARGET_WINDOW,  # noqa: F401
                     WindowTask)

#: The two tasks of Paper 2 (what ``posym reproduce`` runs by default and the book's chapters read).
PAPER_TASKS = ("number", "letter")

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _m not in ("base", "window"):
        importlib.import_module(f"{__name__}.{_m}")

from .letter import LetterTask  # noqa: E402,F401
from .number import NumberTask  # noqa: E402,F401
