"""Tasks of the generic Trainer: each turns a problem into the :class:`~recsys.train.task.Task` protocol.

``ranking`` is registered with :mod:`recsys.train.run_config` here; research tasks register their
own kinds with :func:`recsys.train.run_config.register_task`.
"""

from __future__ import annotations

from recsys.tasks.ranking import RankingTask, RankingTaskConfig, ranking_task_factory
from recsys.train.run_config import register_task

__all__ = ["RankingTask", "RankingTaskConfig", "ranking_task_factory"]

register_task("ranking", ranking_task_factory, replace=True)
