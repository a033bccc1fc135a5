"""Experiment routing: users go to arms by a salted hash of their id, stably.

``u = int(sha256(f"{salt}:{user_id}")[:8]) / 2**64`` lies in [0, 1); arm i takes the users whose
``u`` falls in ``[s_0 + … + s_{i-1}, s_0 + … + s_i)``. The same salt and shares always give the
same arm (across servers and restarts); changing the salt reshuffles users.

Example:
    >>> from serving.configs import Arm, Experiment
    >>> exp = Experiment(salt="2024-q1", arms=(Arm(name="control", version="1", share=0.5),
    ...                                       Arm(name="treatment", version="2", share=0.5)))
    >>> router = ArmRouter(exp)
    >>> router.assign(42).name == router.assign(42).name
    True
    >>> round(user_unit(42, "2024-q1"), 6)
    0.484414
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from itertools import accumulate

from serving.configs import Arm, Experiment

__all__ = ["user_unit", "ArmRouter"]


def user_unit(user_id: int, salt: str) -> float:
    """Maps a user to [0, 1) by ``sha256(f"{salt}:{user_id}")``; stable across machines."""
    digest = hashlib.sha256(f"{salt}:{int(user_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class ArmRouter:
    """Assigns users to the arms of one experiment.

    Args:
        experiment: the arms and salt (validated by its config).
    """

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        # upper bounds of the arms' intervals; the last is forced to 1 so rounding never drops a user
        self._bounds = [*list(accumulate(a.share for a in experiment.arms))[:-1], 1.0]

    def assign(self, user_id: int) -> Arm:
        """The arm of ``user_id``."""
        u = user_unit(user_id, self.experiment.salt)
        return self.experiment.arms[min(bisect_right(self._bounds, u), len(self._bounds) - 1)]

    @property
    def versions(self) -> tuple[str, ...]:
        """The versions the arms route to (duplicates removed, arm order)."""
        return tuple(dict.fromkeys(a.version for a in self.experiment.arms))
