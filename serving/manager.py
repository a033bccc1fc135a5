"""Which versions are loaded, which one serves, and the atomic swap between them.

All routing state is one immutable :class:`RoutingTable`. A Score call reads ``manager.table``
once and keeps the :class:`~serving.scorer.LoadedModel` it picked for the whole call, so a swap
never changes a model under a running request: in-flight requests finish on the old object, new
ones get the new one. A change (activate, rollback, experiment) builds a new table and publishes
it with one reference assignment under a lock, only after the new version has loaded and warmed
up ("load new before unloading old", TF Serving's availability-preserving policy); a failed load
raises and leaves the table as it was.

Admin operations are serialised (one at a time) and block while a model loads; run them off the
event loop. Scoring never waits for them.

Example:
    >>> from serving.repository import ModelRepository
    >>> import tempfile
    >>> m = ModelManager(ModelRepository(tempfile.mkdtemp()), load=lambda path, name, version: None)
    >>> dict(m.table.models), m.status()
    ({}, [])
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from serving.configs import Experiment
from serving.errors import NotFoundError, StateError
from serving.experiments import ArmRouter
from serving.metrics import ServingMetrics
from serving.repository import ModelRepository
from serving.scorer import LoadedModel

__all__ = ["ModelRoutes", "RoutingTable", "ModelStatus", "ModelManager"]

logger = logging.getLogger(__name__)

Loader = Callable[[Path, str, str], LoadedModel]
"""(package folder, expected name, expected version) → a loaded, warmed-up model."""

_MAX_HISTORY = 20


@dataclass(frozen=True)
class ModelRoutes:
    """One model's serving state (immutable)."""

    name: str
    active: LoadedModel
    loaded: MappingProxyType[str, LoadedModel]
    history: tuple[str, ...] = ()
    router: ArmRouter | None = None


@dataclass(frozen=True)
class RoutingTable:
    """Every model's routes and the default model (immutable; replaced whole on every change)."""

    models: MappingProxyType[str, ModelRoutes] = field(default_factory=lambda: MappingProxyType({}))
    default: str | None = None


@dataclass(frozen=True)
class ModelStatus:
    """What :meth:`ModelManager.status` reports for one model."""

    name: str
    active_version: str
    versions: list[str]
    loaded_versions: list[str]
    history: list[str]
    experiment: Experiment | None
    is_default: bool


class ModelManager:
    """Loads versions from a repository and routes requests to them.

    Args:
        repository: the model repository.
        load: builds a :class:`LoadedModel` from a package folder (verifies, loads, warms up).
        default_model: the model of requests that name none; default: the only model, else the
            first one loaded.
        keep_versions: previously active versions kept loaded for a fast rollback.
        metrics: Prometheus metrics to update.
    """

    def __init__(
        self,
        repository: ModelRepository,
        *,
        load: Loader,
        default_model: str | None = None,
        keep_versions: int = 1,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.repository = repository
        self._load_fn = load
        self._default = default_model
        self._keep = keep_versions
        self._metrics = metrics
        self._table = RoutingTable()
        self._publish_lock = threading.Lock()  # guards the one assignment of `_table`
        self._admin_lock = threading.RLock()  # one admin operation at a time

    # ---- the request path ------------------------------------------------------------------
    @property
    def table(self) -> RoutingTable:
        """The current routing table (read it once per request)."""
        return self._table

    def route(self, model: str, version: str, user_id: int) -> tuple[LoadedModel, str]:
        """Picks the model object of one request.

        Args:
            model: the requested model; empty = the default model.
            version: a pinned version; empty = the experiment arm or the active version.
            user_id: the user, for experiment assignment.

        Returns:
            (the loaded model, the arm name or "").

        Raises:
            NotFoundError: unknown model, or a pinned version that is not loaded.
        """
        table = self._table  # one read: this request keeps this snapshot
        name = model or table.default
        routes = table.models.get(name) if name else None
        if routes is None:
            if not name:
                raise NotFoundError("no model is loaded yet; push and activate one (seedrec push --activate)")
            raise NotFoundError(f"model {name!r} is not served here; served: {sorted(table.models)}")
        if version:
            loaded = routes.loaded.get(version)
            if loaded is None:
                raise NotFoundError(f"model {name!r} version {version!r} is not loaded; loaded: {sorted(routes.loaded)}")
            return loaded, ""
        if routes.router is not None:
            arm = routes.router.assign(user_id)
            return routes.loaded[arm.version], arm.name
        return routes.active, ""

    # ---- admin -------------------------------------------------------------------------------
    def start(self, models: Sequence[str] | None = None) -> None:
        """Loads the saved active version (else the latest) of every model (or of ``models``).

        A model whose version fails to load is logged and skipped; the server still starts.
        """
        names = list(models) if models is not None else self.repository.models()
        for name in names:
            state = self.repository.read_state(name)
            version = state["active"] if state["active"] in self.repository.versions(name) else None
            try:
                version = version or self.repository.latest(name)
                self.activate(name, version, record=False, history=[v for v in state["history"] if v != version])
            except Exception as e:  # noqa: BLE001  one bad model must not keep the others from serving
                logger.error("model %s: not served (%s: %s)", name, type(e).__name__, e)

    def activate(self, name: str, version: str, *, record: bool = True, history: list[str] | None = None) -> ModelStatus:
        """Loads (if needed), warms up and makes ``version`` the active version of ``name``.

        Raises:
            NotFoundError: the version is not in the repository.
            PackageError, LoadError: it fails verification or loading; nothing changes.
        """
        with self._admin_lock:
            routes = self._table.models.get(name)
            if routes is not None and routes.active.version == version:
                return self._status(name)
            loaded = self._ensure_loaded(name, version, routes)
            if routes is None:
                hist = tuple(history or ())
                routes = ModelRoutes(name=name, active=loaded, loaded=MappingProxyType({version: loaded}), history=hist)
            else:
                hist = tuple(v for v in routes.history if v != version)
                if record:
                    hist = (*hist, routes.active.version)[-_MAX_HISTORY:]
                routes = replace(routes, active=loaded, loaded=MappingProxyType({**routes.loaded, version: loaded}), history=hist)
            self._publish(routes)
            logger.info("model %s: version %s active", name, version)
            return self._status(name)

    def rollback(self, name: str) -> ModelStatus:
        """Makes the previously active version active again.

        Raises:
            NotFoundError: the model is not served.
            StateError: there is no earlier version to return to.
        """
        with self._admin_lock:
            routes = self._routes(name)
            if not routes.history:
                raise StateError(f"model {name!r}: no earlier active version to roll back to (active: {routes.active.version})")
            target = routes.history[-1]
            loaded = self._ensure_loaded(name, target, routes)
            routes = replace(routes, active=loaded, loaded=MappingProxyType({**routes.loaded, target: loaded}),
                             history=routes.history[:-1])
            self._publish(routes)
            logger.info("model %s: rolled back to version %s", name, target)
            return self._status(name)

    def set_experiment(self, name: str, experiment: Experiment | None) -> ModelStatus:
        """Routes the users of ``name`` by ``experiment`` (``None`` stops it); loads every arm first.

        Raises:
            NotFoundError: the model or an arm's version is unknown.
            PackageError, LoadError: an arm's version fails to load; nothing changes.
        """
        with self._admin_lock:
            routes = self._routes(name)
            loaded = dict(routes.loaded)
            router = ArmRouter(experiment) if experiment is not None else None
            for v in router.versions if router is not None else ():
                loaded[v] = self._ensure_loaded(name, v, routes)
            self._publish(replace(routes, loaded=MappingProxyType(loaded), router=router))
            logger.info("model %s: experiment %s", name, experiment if experiment is not None else "stopped")
            return self._status(name)

    def adopt(self, loaded: LoadedModel, *, activate: bool) -> ModelStatus | None:
        """Takes a model loaded from a just-installed push; activates it when asked."""
        with self._admin_lock:
            routes = self._table.models.get(loaded.name)
            if not activate:
                return None
            if routes is None:
                routes = ModelRoutes(name=loaded.name, active=loaded, loaded=MappingProxyType({loaded.version: loaded}))
            else:
                hist = (*[v for v in routes.history if v != loaded.version], routes.active.version)[-_MAX_HISTORY:]
                routes = replace(routes, active=loaded, loaded=MappingProxyType({**routes.loaded, loaded.version: loaded}),
                                 history=hist)
            self._publish(routes)
            logger.info("model %s: pushed version %s active", loaded.name, loaded.version)
            return self._status(loaded.name)

    def status(self, name: str | None = None) -> list[ModelStatus]:
        """The status of one model (or every served and installed model).

        Raises:
            NotFoundError: ``name`` is neither served nor installed.
        """
        if name:
            if name not in self._table.models and not self.repository.versions(name):
                raise NotFoundError(f"model {name!r} is neither served nor in the repository; models: {self.repository.models()}")
            return [self._status(name)]
        names = sorted(set(self._table.models) | set(self.repository.models()))
        return [self._status(n) for n in names]

    # ---- internals -------------------------------------------------------------------------
    def _routes(self, name: str) -> ModelRoutes:
        routes = self._table.models.get(name)
        if routes is None:
            raise NotFoundError(f"model {name!r} is not served here; served: {sorted(self._table.models)}")
        return routes

    def _ensure_loaded(self, name: str, version: str, routes: ModelRoutes | None) -> LoadedModel:
        if routes is not None and version in routes.loaded:
            return routes.loaded[version]
        path = self.repository.path(name, version)  # NotFoundError when not installed
        try:
            loaded = self._load_fn(path, name, version)
        except Exception:
            if self._metrics is not None:
                self._metrics.loads.labels(model=name, result="failed").inc()
            raise
        if self._metrics is not None:
            self._metrics.loads.labels(model=name, result="ok").inc()
        return loaded

    def _publish(self, routes: ModelRoutes) -> None:
        """Prunes unneeded versions, then swaps in the new table (one reference assignment)."""
        keep = {routes.active.version, *(routes.router.versions if routes.router else ())}
        keep |= set(routes.history[-self._keep:]) if self._keep else set()
        dropped = [v for v in routes.loaded if v not in keep]
        routes = replace(routes, loaded=MappingProxyType({v: m for v, m in routes.loaded.items() if v in keep}))
        with self._publish_lock:
            models = {**self._table.models, routes.name: routes}
            default = self._default if self._default in models else (self._table.default or min(models))
            self._table = RoutingTable(models=MappingProxyType(models), default=default)
        self.repository.write_state(routes.name, active=routes.active.version, history=list(routes.history))
        if self._metrics is not None:
            self._metrics.set_versions(routes.name, active=routes.active.version, loaded=list(routes.loaded), unloaded=dropped)
        if dropped:
            logger.info("model %s: unloaded versions %s (in-flight requests finish on them)", routes.name, dropped)

    def _status(self, name: str) -> ModelStatus:
        table = self._table
        routes = table.models.get(name)
        return ModelStatus(
            name=name,
            active_version=routes.active.version if routes else "",
            versions=self.repository.versions(name),
            loaded_versions=sorted(routes.loaded) if routes else [],
            history=list(routes.history) if routes else [],
            experiment=routes.router.experiment if routes and routes.router else None,
            is_default=table.default == name,
        )

    def loaded_models(self) -> list[LoadedModel]:
        """Every loaded model object (for warm checks and shutdown)."""
        return [m for r in self._table.models.values() for m in r.loaded.values()]
