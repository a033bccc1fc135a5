"""Research tasks for the shared Trainer; importing this package registers their kinds.

``recsys.train.run_config`` imports it on the first lookup of an unknown ``task.kind``, so
``task: {kind: lm}`` works in any run file.
"""

from recsys.train.run_config import register_task
from research.tasks.lm import LMTask, lm_task_from_run

__all__ = ["LMTask", "lm_task_from_run"]

register_task("lm", lm_task_from_run)
