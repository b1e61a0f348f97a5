"""Apache Kafka's jars: fetched from Maven Central through ``tools/kafka/pom.xml`` and
cached per version (`ensure_kafka_jars`), for the broker `switchboard.brokers.kafka` runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Final

from switchboard.brokers import (
    BrokerError,
)

__all__ = [
    "KAFKA_VERSION",
    "ensure_kafka_jars",
    "kafka_cache_dir",
    "kafka_pom",
]

#: Kept in step with ``<kafka.version>`` in tools/kafka/pom.xml (we pass it explicitly).
KAFKA_VERSION: Final = "4.1.1"

_COMPLETE_MARKER: Final = ".complete"

_MAVEN_TIMEOUT_S: Final = 1800.0


def kafka_cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the jars of ``version`` are cached: ``<cache>/kafka-<version>/libs``.

    ``<cache>`` is ``$SWITCHBOARD_CACHE_DIR`` or ``~/.cache/switchboard``.
    """
    base = os.environ.get("SWITCHBOARD_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "switchboard"
    return root / f"kafka-{version}" / "libs"


def kafka_pom() -> Path:
    """The Maven project that fetches the jars (``$SWITCHBOARD_KAFKA_POM`` overrides)."""
    override = os.environ.get("SWITCHBOARD_KAFKA_POM")
    if override:
        return Path(override)
    # libs/switchboard/brokers/kafka_jars.py -> repository root is three folders up.
    return Path(__file__).resolve().parents[3] / "tools" / "kafka" / "pom.xml"


def ensure_kafka_jars(version: str = KAFKA_VERSION, cache_dir: Path | None = None) -> Path:
    """Return a folder with every jar the broker needs, running Maven only if absent.

    Idempotent and safe to race: Maven fills a private folder that is renamed into
    place only when complete, and a marker file tells complete from interrupted.
    """
    libs = cache_dir if cache_dir is not None else kafka_cache_dir(version)
    if (libs / _COMPLETE_MARKER).is_file():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is needed to fetch the Kafka jars but is not on PATH")
    pom = kafka_pom()
    if not pom.is_file():
        raise BrokerError(f"Kafka pom not found at {pom} (set SWITCHBOARD_KAFKA_POM)")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = libs.parent / f".libs-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        try:
            result = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(pom),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={staging}",
                    f"-Dkafka.version={version}",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_MAVEN_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"Maven did not finish within {_MAVEN_TIMEOUT_S:.0f} s") from exc
        if result.returncode != 0:
            raise BrokerError(
                f"fetching Kafka {version} jars: Maven failed "
                f"(exit {result.returncode}):\n{result.stdout}\n{result.stderr}".rstrip()
            )
        if not (staging / f"kafka_2.13-{version}.jar").is_file():
            raise BrokerError(
                f"Maven succeeded but kafka_2.13-{version}.jar is missing in {staging}:\n"
                f"{result.stdout}\n{result.stderr}".rstrip()
            )
        (staging / _COMPLETE_MARKER).write_text(version + "\n")
        if libs.exists() and not (libs / _COMPLETE_MARKER).is_file():
            shutil.rmtree(libs)  # left by an interrupted run of an older layout
        try:
            staging.rename(libs)
        except OSError:
            # Another process won the race; its copy is as good as ours.
            if not (libs / _COMPLETE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return libs
