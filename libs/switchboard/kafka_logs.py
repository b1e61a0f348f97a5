"""aiokafka's log lines at their true weight.

aiokafka logs at ERROR what it retries by itself a moment later: a group coordinator or
a partition leader not elected yet (a new cluster, topics created a moment ago), a fetch
that met a leader change. Every first start on Apache Kafka printed a dozen of those.
Here they are warnings; an ERROR line from aiokafka means something it gives up on
(authorization, an invalid topic, an unexpected exception), as ours always do.
"""

from __future__ import annotations

import logging

from aiokafka.errors import KafkaError

# The aiokafka loggers that report retriable errors with the error as an argument.
LOGGERS = (
    "aiokafka.consumer.group_coordinator",
    "aiokafka.consumer.fetcher",
    "aiokafka.producer.sender",
    "aiokafka.client",
    "aiokafka.cluster",
)
# Lines that name no error object but report what the next metadata refresh retries: a
# topic created a moment ago that this broker's metadata does not list yet.
RETRIED_MESSAGES = frozenset({"Topic %s not found in cluster metadata"})


def retriable(record: logging.LogRecord) -> bool:
    """Whether `record` reports an error that aiokafka retries (`KafkaError.retriable`)."""
    if record.msg in RETRIED_MESSAGES:
        return True
    args = record.args if isinstance(record.args, tuple) else ()
    return any(isinstance(a, KafkaError) and a.retriable for a in args)


class RetriableAsWarning(logging.Filter):
    """Lowers an ERROR record about a retriable Kafka error to WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and retriable(record):
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
        return True


_FILTER = RetriableAsWarning()


def install() -> None:
    """Put the filter on aiokafka's loggers (once; any later call does nothing)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
