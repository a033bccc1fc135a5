"""Config validation: each bad value raises ConfigError naming the field."""

from __future__ import annotations

import pytest

from seedrec.errors import ConfigError
from serving.configs import Arm, Experiment, MemoryConfig, ScorerConfig, ServerConfig, StoreConfig, check_name


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ServerConfig(repository=""), "repository"),
        (lambda: ServerConfig(repository="r", port=70000), "port"),
        (lambda: ServerConfig(repository="r", admin_token=""), "admin_token"),
        (lambda: ServerConfig(repository="r", max_message_bytes=10), "max_message_bytes"),
        (lambda: ScorerConfig(max_candidates=0), "max_candidates"),
        (lambda: MemoryConfig(deadline_ms=0), "deadline_ms"),
        (lambda: MemoryConfig(breaker_failures=0), "breaker_failures"),
        (lambda: StoreConfig(namespace="a:b"), "namespace"),
        (lambda: Arm(name="a", version="1", share=0.0), "share"),
        (lambda: Arm(name="../x", version="1", share=1.0), "name"),
        (lambda: Experiment(salt="s", arms=()), "arms"),
        (lambda: Experiment(salt="s", arms=(Arm(name="a", version="1", share=0.5), Arm(name="a", version="2", share=0.5))), "arms"),
        (lambda: Experiment(salt="s", arms=(Arm(name="a", version="1", share=0.7),)), "arms"),
    ],
)
def test_bad_values_name_the_field(build: object, field: str) -> None:
    with pytest.raises(ConfigError, match=f"`{field}`"):
        build()  # type: ignore[operator]  # a lambda from the table


@pytest.mark.parametrize("bad", ["", "..", "a/b", ".hidden", "x" * 200])
def test_unsafe_names_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        check_name("version", bad)
