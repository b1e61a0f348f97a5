"""aiokafka's retried errors are logged as warnings; what it gives up on stays ERROR."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
)

from switchboard import kafka_logs


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def recorded() -> list[logging.LogRecord]:
    kafka_logs.install()
    kafka_logs.install()  # twice: still one filter
    recorder = Recorder()
    root = logging.getLogger("aiokafka")
    root.addHandler(recorder)
    try:
        yield recorder.records
    finally:
        root.removeHandler(recorder)


def test_retriable_errors_become_warnings(recorded: list[logging.LogRecord]) -> None:
    for name in kafka_logs.LOGGERS:
        assert logging.getLogger(name).filters.count(kafka_logs._FILTER) == 1
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    coordinator.error("Group Coordinator Request failed: %s",
                      GroupCoordinatorNotAvailableError())
    fetcher.error("Failed fetch offsets from %s: %s", 1, NotLeaderForPartitionError())
    # Given up on, or no error to judge by: as logged.
    fetcher.error("Failed fetch offsets from %s: %s", 1, TopicAuthorizationFailedError())
    coordinator.error("Heartbeat session expired - marking coordinator dead")
    coordinator.error("with a mapping %(x)s", {"x": GroupCoordinatorNotAvailableError()})
    cluster = logging.getLogger("aiokafka.cluster")
    cluster.error("Topic %s not found in cluster metadata", "t.registry")  # retried
    cluster.error("Topic %s is not authorized for this client", "t.registry")
    assert [r.levelname for r in recorded] == ["WARNING", "WARNING", "ERROR", "ERROR", "ERROR",
                                               "WARNING", "ERROR"]
    assert [r.levelno for r in recorded][:2] == [logging.WARNING, logging.WARNING]

