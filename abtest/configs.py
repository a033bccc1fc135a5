"""Configuration of a simulated A/B test (enums and dataclasses only: no I/O, no behaviour).

One :class:`ABTestConfig` describes an experiment end to end: the arms (a model version each and a
traffic share), how users are assigned (``salt``), how long it runs (``days`` after ``pre_days`` of
pre-period used by CUPED), the simulated traffic, the scoring server, and how it is read (metrics,
``alpha``, multiple-testing correction, SRM gate, mSPRT mixture). The statistics behind the fields
are in :mod:`abtest.stats` and ``shared/specs/platform-landscape.md`` §5.4.

Each config is ``@dataclass(frozen=True, kw_only=True)`` and validates itself in ``__post_init__``,
raising :class:`~seedrec.errors.ConfigError` (a ``ValueError``) that names the field in backticks,
the bad value and the fix. :meth:`ABTestConfig.from_dict` builds one from parsed YAML/JSON.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum, unique
from typing import Any

from feature_pipeline.configs import DOMAIN_NAMES
from seedrec.errors import ConfigError
from seedrec.validation import check_float
from seedrec.validation import check_int as _check_int

__all__ = ["Metric", "Correction", "ArmConfig", "ABTestConfig"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ADDRESS_RE = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})$")


@unique
class Metric(str, Enum):  # noqa: UP042  (STYLE §3 asks for str, Enum; StrEnum changes str())
    """A metric read from the per-user table (definitions in ``abtest.stats.METRIC_DEFS``)."""

    CTR = "ctr"  # clicks / impressions, a ratio of sums (delta method)
    CLICKS_PER_USER = "clicks_per_user"
    PURCHASES_PER_USER = "purchases_per_user"
    REVENUE_PER_USER = "revenue_per_user"
    CVR = "cvr"  # purchases / clicks, a ratio of sums (delta method)


@unique
class Correction(str, Enum):  # noqa: UP042  (as Metric)
    """Multiple-testing correction across the treatment arms of one metric."""

    NONE = "none"
    HOLM = "holm"






def _check_name(name: str, value: object, fix: str) -> None:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ConfigError(
            f"`{name}` must be 1-64 characters of letters, digits, `_`, `.` or `-`, got {value!r}; {fix}"
        )


@dataclass(frozen=True, kw_only=True)
class ArmConfig:
    """One arm of an experiment: the model version it serves and its share of users.

    Attributes:
        name: the arm's name, shown in reports (``control``, ``lmn``).
        model: the model name in the scoring server's repository (``din``, ``ads``, ``lmn``).
        version: the model version to serve; ``""`` means the version active on the server.
        share: the fraction of users assigned to this arm, in (0, 1]; the shares of an
            experiment sum to 1.

    Example:
        >>> ArmConfig(name="lmn", model="lmn", version="3", share=0.5).share
        0.5
    """

    name: str
    model: str
    version: str = ""
    share: float

    def __post_init__(self) -> None:
        _check_name("name", self.name, "name the arm, e.g. 'control' or 'lmn'")
        _check_name("model", self.model, "pass a model name known to the server, e.g. 'din'")
        if not isinstance(self.version, str) or (self.version and not _NAME_RE.match(self.version)):
            raise ConfigError(
                f"`version` of arm {self.name!r} must be '' (the active version) or a version name such as '3', "
                f"got {self.version!r}"
            )
        check_float("share", self.share, 0.0, 1.0, f"give arm {self.name!r} a traffic share such as 0.5", open_lo=True)


@dataclass(frozen=True, kw_only=True)
class ABTestConfig:
    """A simulated A/B test: arms, traffic, duration, the server to query and how to read it.

    Attributes:
        name: the experiment's name (report titles, output folder names).
        arms: two or more arms; names unique, shares summing to 1.
        control: the name of the control arm; ``""`` means the first arm.
        salt: the hashing salt of user → arm assignment; a new salt reshuffles users, so reusing
            one across experiments carries over their residual effects.
        seed: the seed of the simulated users' randomness (clicks, purchases, request times).
        world_dir: a folder written by ``seedrec data synth`` whose ``world.json`` gives the
            simulated users; ``""`` generates a world from ``seed``.
        users: the number of simulated users assigned to the experiment.
        days: days the experiment runs; the sequential test looks once a day.
        pre_days: days of pre-period (every user on the control model) before the experiment,
            whose per-user metrics are CUPED's covariates; 0 disables CUPED.
        domains: the domains traffic is sent to (a subset of ``feature_pipeline.configs.DOMAIN_NAMES``).
        requests_per_user_day: mean Score requests per user per day.
        slate_size: items shown per request (the top of the scored candidates).
        candidates: candidates sent per Score request.
        server: the scoring server's ``host:port``.
        deadline_s: the deadline of each Score request in seconds.
        concurrency: Score requests in flight at once.
        metrics: the metrics to test.
        primary_metric: the metric of the report's headline verdict; must be in ``metrics``.
        alpha: the significance level of every test and ``1 - alpha`` the confidence of every interval.
        correction: the multiple-testing correction across treatment arms of one metric.
        cuped: adjust for the pre-period metric (CUPED); needs ``pre_days >= 1``.
        srm_alpha: the p-value below which the sample-ratio-mismatch gate fires.
        msprt_tau: the standard deviation of the mSPRT's normal mixture over the *relative* lift
            (0.05 = effects of about ±5% are expected); see :func:`abtest.stats.msprt`.

    Example:
        >>> cfg = ABTestConfig(arms=(ArmConfig(name="control", model="din", share=0.5),
        ...                          ArmConfig(name="lmn", model="lmn", version="3", share=0.5)))
        >>> cfg.control_arm.name, [a.name for a in cfg.treatments]
        ('control', ['lmn'])
    """

    name: str = "abtest"
    arms: tuple[ArmConfig, ...]
    control: str = ""
    salt: str = "seedrec-abtest"
    seed: int = 0
    world_dir: str = ""
    users: int = 20_000
    days: int = 14
    pre_days: int = 7
    domains: tuple[str, ...] = DOMAIN_NAMES[:3]
    requests_per_user_day: float = 1.0
    slate_size: int = 10
    candidates: int = 100
    server: str = "127.0.0.1:50051"
    deadline_s: float = 1.0
    concurrency: int = 8
    metrics: tuple[Metric, ...] = (
        Metric.CTR,
        Metric.CLICKS_PER_USER,
        Metric.PURCHASES_PER_USER,
        Metric.REVENUE_PER_USER,
    )
    primary_metric: Metric = Metric.CLICKS_PER_USER
    alpha: float = 0.05
    correction: Correction = Correction.HOLM
    cuped: bool = True
    srm_alpha: float = 0.001
    msprt_tau: float = 0.05

    def __post_init__(self) -> None:
        _check_name("name", self.name, "name the experiment, e.g. 'lmn-vs-din'")
        self._check_arms()
        if not isinstance(self.salt, str) or not self.salt:
            raise ConfigError(f"`salt` must be a non-empty string, got {self.salt!r}; e.g. 'lmn-vs-din-2024-05'")
        _check_int("seed", self.seed, 0, 2**63 - 1, "pass a non-negative seed")
        if not isinstance(self.world_dir, str):
            raise ConfigError(f"`world_dir` must be a path string ('' to generate a world), got {self.world_dir!r}")
        _check_int("users", self.users, 2 * len(self.arms), None, "pass at least 2 users per arm")
        _check_int("days", self.days, 1, 366, "run the experiment between 1 and 366 days")
        _check_int("pre_days", self.pre_days, 0, 366, "pass 0 (no CUPED) to 366 pre-period days")
        self._check_domains()
        check_float("requests_per_user_day", self.requests_per_user_day, 0.0, 1e4, "pass a positive mean, e.g. 1", open_lo=True)
        _check_int("slate_size", self.slate_size, 1, 1000, "pass the number of items shown per request, e.g. 10")
        _check_int("candidates", self.candidates, self.slate_size, 100_000, "send at least `slate_size` candidates")
        match = _ADDRESS_RE.match(self.server) if isinstance(self.server, str) else None
        if match is None or not 1 <= int(match["port"]) <= 65535:
            raise ConfigError(f"`server` must be 'host:port' with a port in 1..65535, got {self.server!r}")
        check_float("deadline_s", self.deadline_s, 0.0, 600.0, "pass a deadline in seconds, e.g. 1.0", open_lo=True)
        _check_int("concurrency", self.concurrency, 1, 4096, "pass the number of requests in flight, e.g. 8")
        self._check_metrics()
        check_float("alpha", self.alpha, 0.0, 0.5, "pass a significance level such as 0.05", open_lo=True)
        if not isinstance(self.correction, Correction):
            raise ConfigError(f"`correction` must be one of {[c.value for c in Correction]}, got {self.correction!r}")
        if not isinstance(self.cuped, bool):
            raise ConfigError(f"`cuped` must be true or false, got {self.cuped!r}")
        if self.cuped and self.pre_days == 0:
            raise ConfigError("`cuped` needs a pre-period, but `pre_days` is 0; set `pre_days` >= 1 or `cuped` false")
        check_float("srm_alpha", self.srm_alpha, 0.0, 0.5, "pass a small gate level such as 0.001", open_lo=True)
        check_float("msprt_tau", self.msprt_tau, 0.0, 10.0, "pass the expected size of relative lifts, e.g. 0.05", open_lo=True)

    def _check_arms(self) -> None:
        if not isinstance(self.arms, tuple) or len(self.arms) < 2 or not all(isinstance(a, ArmConfig) for a in self.arms):
            raise ConfigError(f"`arms` must be a tuple of at least 2 ArmConfig, got {self.arms!r}; add a control arm")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"`arms` names must be unique, got {names}; rename {dup}")
        total = sum(a.share for a in self.arms)
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(
                f"`arms` shares must sum to 1, got {total:.6g} from {[a.share for a in self.arms]}; rescale them"
            )
        if not isinstance(self.control, str) or (self.control and self.control not in names):
            raise ConfigError(f"`control` must be '' (the first arm) or one of {names}, got {self.control!r}")

    def _check_domains(self) -> None:
        if not isinstance(self.domains, tuple) or not self.domains:
            raise ConfigError(f"`domains` must be a non-empty tuple of names, got {self.domains!r}")
        bad = [d for d in self.domains if d not in DOMAIN_NAMES]
        if bad or len(set(self.domains)) != len(self.domains):
            raise ConfigError(f"`domains` must be distinct names from {DOMAIN_NAMES}, got {self.domains!r}")

    def _check_metrics(self) -> None:
        if not isinstance(self.metrics, tuple) or not self.metrics:
            raise ConfigError(f"`metrics` must be a non-empty tuple of Metric, got {self.metrics!r}")
        bad = [m for m in self.metrics if not isinstance(m, Metric)]
        if bad or len(set(self.metrics)) != len(self.metrics):
            raise ConfigError(
                f"`metrics` must be distinct Metric values from {[m.value for m in Metric]}, got {self.metrics!r}; "
                "use ABTestConfig.from_dict to parse names"
            )
        if self.primary_metric not in self.metrics:
            raise ConfigError(
                f"`primary_metric` {self.primary_metric!r} must be one of `metrics` {[m.value for m in self.metrics]}"
            )

    @property
    def control_arm(self) -> ArmConfig:
        """The control arm (``control`` or, if empty, the first arm)."""
        name = self.control or self.arms[0].name
        return next(a for a in self.arms if a.name == name)

    @property
    def treatments(self) -> tuple[ArmConfig, ...]:
        """The arms other than the control, in configured order."""
        control = self.control_arm.name
        return tuple(a for a in self.arms if a.name != control)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ABTestConfig:
        """Builds a config from parsed YAML/JSON: arms as mappings, enums and tuples as names and lists.

        Args:
            raw: the mapping; unknown keys are refused.

        Raises:
            ConfigError: an unknown key, an unknown metric or correction name, or any invalid field.

        Example:
            >>> cfg = ABTestConfig.from_dict({"arms": [{"name": "a", "model": "din", "share": 0.5},
            ...                                        {"name": "b", "model": "lmn", "share": 0.5}],
            ...                               "metrics": ["ctr", "clicks_per_user"]})
            >>> cfg.metrics[0]
            <Metric.CTR: 'ctr'>
        """
        if not isinstance(raw, Mapping):
            raise ConfigError(f"an A/B test config must be a mapping, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown A/B test config keys {unknown}; known keys are {sorted(known)}")
        kw: dict[str, Any] = dict(raw)
        if "arms" in kw:
            arms = kw["arms"]
            if not isinstance(arms, (list, tuple)):
                raise ConfigError(f"`arms` must be a list of mappings, got {arms!r}")
            arm_keys = {f.name for f in fields(ArmConfig)}
            parsed = []
            for i, arm in enumerate(arms):
                if isinstance(arm, ArmConfig):
                    parsed.append(arm)
                    continue
                if not isinstance(arm, Mapping) or set(arm) - arm_keys:
                    raise ConfigError(f"`arms[{i}]` must be a mapping with keys {sorted(arm_keys)}, got {arm!r}")
                parsed.append(ArmConfig(**{k: (str(v) if k == "version" else v) for k, v in arm.items()}))
            kw["arms"] = tuple(parsed)
        for key, enum in (("primary_metric", Metric), ("correction", Correction)):
            if key in kw:
                kw[key] = _parse_enum(key, kw[key], enum)
        if "metrics" in kw:
            if not isinstance(kw["metrics"], (list, tuple)):
                raise ConfigError(f"`metrics` must be a list of names, got {kw['metrics']!r}")
            kw["metrics"] = tuple(_parse_enum("metrics", m, Metric) for m in kw["metrics"])
            kw.setdefault("primary_metric", kw["metrics"][0] if kw["metrics"] else Metric.CLICKS_PER_USER)
        if "domains" in kw and isinstance(kw["domains"], list):
            kw["domains"] = tuple(kw["domains"])
        return cls(**kw)


def _parse_enum(key: str, value: object, enum: type[Enum]) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise ConfigError(f"`{key}` must be one of {[e.value for e in enum]}, got {value!r}") from None
