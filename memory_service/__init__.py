"""The million-slot LMN memory block: Redis layout, versioning, gRPC server and client, cache.

Modules: :mod:`~memory_service.layout` (keys and encodings), :mod:`~memory_service.store` (all the
logic, over a redis-py client), :mod:`~memory_service.server` (gRPC), :mod:`~memory_service.client`
(gRPC client with a row cache), :mod:`~memory_service.cli` (``seedrec memory serve|load``).
"""
