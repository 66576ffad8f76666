"""The local Kafka-protocol broker: topics pre-created, ContentEvents round-trip
with headers and manual commits."""

import uuid

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from mmsearch.dev.broker import CONTENT_TOPIC, DLQ_TOPIC, PARTITIONS
from mmsearch.v1 import common_pb2, events_pb2
from tests.conftest import BrokerHandle

pytestmark = pytest.mark.integration


def test_topics_are_precreated(broker: BrokerHandle) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        assert {CONTENT_TOPIC, DLQ_TOPIC} <= set(admin.list_topics())
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        assert consumer.partitions_for_topic(CONTENT_TOPIC) == set(range(PARTITIONS))
    finally:
        consumer.close()


def test_content_event_round_trip(broker: BrokerHandle) -> None:
    event = events_pb2.ContentEvent(
        event_id=str(uuid.uuid4()),
        operation=events_pb2.ContentEvent.OPERATION_UPSERT,
        tenant="dev",
        item_id="doc-1",
        modality=common_pb2.MODALITY_TEXT,
        content=common_pb2.Content(text="a red sports car"),
        metadata=common_pb2.ItemMetadata(tags=["cars"], source="test"),
        event_time=Timestamp(seconds=1_700_000_000),
        version=3,
    )
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=True)
    key = b"dev/doc-1"
    metadata = producer.send(
        CONTENT_TOPIC,
        key=key,
        value=event.SerializeToString(),
        headers=[("content-type", b"application/x-protobuf")],
    ).get(timeout=10)
    producer.close()

    group = f"test-{uuid.uuid4()}"
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    tp = TopicPartition(CONTENT_TOPIC, metadata.partition)
    consumer.assign([tp])
    consumer.seek(tp, metadata.offset)
    records = consumer.poll(timeout_ms=10_000, max_records=1)[tp]
    consumer.commit()
    assert consumer.committed(tp) == metadata.offset + 1
    consumer.close()

    (record,) = records
    assert record.key == key
    assert dict(record.headers)["content-type"] == b"application/x-protobuf"
    decoded = events_pb2.ContentEvent.FromString(record.value)
    assert decoded == event
