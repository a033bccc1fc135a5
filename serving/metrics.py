"""Prometheus metrics of one scoring server (its own registry, so several servers share a process).

========================================  =========  ==============================================
metric                                    type       labels
========================================  =========  ==============================================
``seedrec_serving_requests_total``        counter    model, version, arm, code (gRPC status name)
``seedrec_serving_request_seconds``       histogram  model (Score latency inside the server)
``seedrec_serving_candidates_total``      counter    model, version
``seedrec_serving_errors_total``          counter    method, code
``seedrec_serving_model_version``         gauge      model, version: 1 = active, 0 = loaded, not active
``seedrec_serving_memory_fallbacks_total``  counter  model: Score calls answered with the memory fallback
``seedrec_serving_history_reads_total``   counter    source (request, online_store, none, store_unavailable)
``seedrec_serving_loads_total``           counter    model, result (ok, failed)
========================================  =========  ==============================================

Example:
    >>> m = ServingMetrics()
    >>> m.requests.labels(model="din", version="1", arm="", code="OK").inc()
    >>> b"seedrec_serving_requests_total" in m.render()
    True
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

__all__ = ["ServingMetrics"]

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    """The metrics of one server.

    Args:
        registry: where to register; a fresh one by default.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("seedrec_serving_requests", "Score calls", ["model", "version", "arm", "code"], registry=r)
        self.latency = Histogram("seedrec_serving_request_seconds", "Score latency in the server", ["model"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.candidates = Counter("seedrec_serving_candidates", "Candidates scored", ["model", "version"], registry=r)
        self.errors = Counter("seedrec_serving_errors", "Failed calls", ["method", "code"], registry=r)
        self.model_version = Gauge("seedrec_serving_model_version", "1 = active version, 0 = loaded", ["model", "version"], registry=r)
        self.memory_fallbacks = Counter("seedrec_serving_memory_fallbacks", "Score calls answered with the memory fallback",
                                        ["model"], registry=r)
        self.history_reads = Counter("seedrec_serving_history_reads", "Where histories came from", ["source"], registry=r)
        self.loads = Counter("seedrec_serving_loads", "Model loads", ["model", "result"], registry=r)
        self._http: Any = None

    def set_versions(self, model: str, *, active: str, loaded: list[str], unloaded: list[str]) -> None:
        """Updates the version gauge of one model."""
        present = self._label_sets()
        for v in unloaded:
            if (model, v) in present:
                self.model_version.remove(model, v)
        for v in loaded:
            self.model_version.labels(model=model, version=v).set(1.0 if v == active else 0.0)

    def _label_sets(self) -> set[tuple[str, str]]:
        return {(s.labels["model"], s.labels["version"]) for m in self.model_version.collect() for s in m.samples}

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)

    def serve_http(self, port: int, host: str = "127.0.0.1") -> int:
        """Starts the ``/metrics`` HTTP endpoint; returns its port (a free one when ``port`` is 0)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
