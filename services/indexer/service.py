"""Indexer admin service. The API is defined in protos/mmsearch/v1/indexer.proto
and the Kafka event schema in events.proto; the consumer and stores are issue #4."""

from __future__ import annotations

from mmsearch.v1 import indexer_pb2, indexer_pb2_grpc
from services.kit.auth import ROLE_INDEX_ADMIN
from services.kit.component import Component, Deps, pending_component


def build_indexer(deps: Deps) -> Component:
    return pending_component(
        "indexer",
        service=indexer_pb2.DESCRIPTOR.services_by_name["IndexerAdmin"],
        servicer_base=indexer_pb2_grpc.IndexerAdminServicer,
        add_to_server=indexer_pb2_grpc.add_IndexerAdminServicer_to_server,
        role=ROLE_INDEX_ADMIN,
        planned_in="issue #4",
    )
