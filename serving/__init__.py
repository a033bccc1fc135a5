"""The gRPC scoring server: model packages, repository, loading, hot swap, experiments, admin API.

Modules, one concept each::

    configs        config dataclasses and enums (no behaviour)
    errors         the server's errors, each answered with one gRPC status code
    package        the model package format: manifest, checksums, verification
    export         RUN checkpoint -> model package (``seedrec export``)
    repository     REPO/NAME/VERSION folders: list, install atomically, saved active versions
    memory         LMN memory reads: memory service, circuit breaker, packaged-table fallback
    scorer         a loaded model: request -> FeatureTransform -> forward -> scores; warm-up
    experiments    salted-hash assignment of users to arms
    manager        loaded versions, the active one, atomic swap, rollback, experiments
    feature_store  the online feature store reader used when a request has no history
    metrics        Prometheus metrics of one server
    wire           proto messages <-> scorer inputs / outputs
    server         the RankingService and ModelAdmin servicers, create_server(), serve()
    client         RankingClient (Score) and AdminClient (push, activate, ...)
    cli            ``seedrec serve | push | score``
    testing        stand-in samples, model and packages for tests and benchmarks
"""
