"""Searcher service. The API is defined in protos/mmsearch/v1/searcher.proto;
the implementation (ANN + filters, hybrid BM25 with RRF, rerank) is issue #5."""

from __future__ import annotations

from mmsearch.v1 import searcher_pb2, searcher_pb2_grpc
from services.kit.auth import ROLE_SEARCH
from services.kit.component import Component, Deps, pending_component


def build_searcher(deps: Deps) -> Component:
    return pending_component(
        "searcher",
        service=searcher_pb2.DESCRIPTOR.services_by_name["Searcher"],
        servicer_base=searcher_pb2_grpc.SearcherServicer,
        add_to_server=searcher_pb2_grpc.add_SearcherServicer_to_server,
        role=ROLE_SEARCH,
        planned_in="issue #5",
    )
