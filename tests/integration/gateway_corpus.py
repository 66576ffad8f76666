"""A stack with the gateway (target all) and a small real corpus ingested through
Kafka: photos, sounds and documents, shared by the gateway's contract tests and
its headless-browser test."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from mmsearch.producer import media_event, text_event
from mmsearch.v1 import common_pb2
from tests.conftest import DEV_TOKEN, BrokerHandle, TritonHandle, sample
from tests.integration.test_indexer import Indexing, publish, start_indexing

PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "camera.png", "horse.png", "coins.png")
SOUNDS = ("dog.mp3", "cat.mp3", "cow.mp3", "duck.mp3")
DOCS = {
    "doc-cats": ("Cats sleep most of the day and love warm windows.", ["pets"]),
    "doc-coffee": ("Espresso is brewed by forcing hot water through finely ground coffee beans.", ["food"]),
    "doc-rockets": (
        "The rocket lifted off from the launch pad at dawn, carrying a weather satellite.",
        ["space"],
    ),
    "doc-invoice": (
        "Payment reminder for invoice INV-2024-00731: please pay within seven days.",
        ["finance"],
    ),
}


@dataclass
class GatewayCorpus:
    indexing: Indexing

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.indexing.service.gateway_port}"

    @property
    def grpc_addr(self) -> str:
        return self.indexing.service.addr

    def client(self, token: str | None = DEV_TOKEN) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)


async def start_gateway_corpus(triton: TritonHandle, broker: BrokerHandle) -> GatewayCorpus:
    indexing = await start_indexing(triton, broker)
    events = [
        text_event("dev", item, text, title=item, tags=tags, source="wiki")
        for item, (text, tags) in DOCS.items()
    ]
    events += [
        media_event(
            "dev", name, sample(f"images/{name}"), common_pb2.MODALITY_IMAGE, title=name, tags=["photo"]
        )
        for name in PHOTOS
    ]
    events += [
        media_event(
            "dev", name, sample(f"audio/{name}"), common_pb2.MODALITY_AUDIO, title=name, tags=["sound"]
        )
        for name in SOUNDS
    ]
    events.append(text_event("tenant-b", "secret", "tenant b's private cat notes"))
    # Poison for the dead-letter browser: a "photo" that is not one, in each tenant.
    for tenant in ("dev", "tenant-b"):
        events.append(
            media_event(
                tenant, f"broken-{tenant}.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 300, common_pb2.MODALITY_IMAGE
            )
        )
    produced = publish(indexing.bootstrap, indexing.topic, events)
    await indexing.wait_caught_up(produced)
    return GatewayCorpus(indexing)
