"""Reranker service. The API is defined in protos/mmsearch/v1/reranker.proto;
the reranker model and service are issues #3 and #5."""

from __future__ import annotations

from mmsearch.v1 import reranker_pb2, reranker_pb2_grpc
from services.kit.auth import ROLE_RERANK
from services.kit.component import Component, Deps, pending_component


def build_reranker(deps: Deps) -> Component:
    return pending_component(
        "reranker",
        service=reranker_pb2.DESCRIPTOR.services_by_name["Reranker"],
        servicer_base=reranker_pb2_grpc.RerankerServicer,
        add_to_server=reranker_pb2_grpc.add_RerankerServicer_to_server,
        role=ROLE_RERANK,
        planned_in="issues #3 and #5",
    )
