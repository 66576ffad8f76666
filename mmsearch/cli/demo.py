"""`mmsearch demo`, the main job on the embedded default: publish the bundled
sample set (photos, sounds, short documents) to Kafka as ContentEvents, wait
until the indexer has made it searchable, then run cross-modal searches
through the Searcher API and print the results."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np

from mmsearch.cli.embed import embed_texts, print_embeddings
from mmsearch.clients.connect import HEALTH_SERVICES, auth_metadata, default_bootstrap, health_status
from mmsearch.producer import ContentProducer, media_event, text_event
from mmsearch.v1 import common_pb2, indexer_pb2, indexer_pb2_grpc, searcher_pb2, searcher_pb2_grpc

SAMPLES = Path(__file__).resolve().parents[2] / ".cache" / "samples"
TENANT = "dev"  # the tenant of the development token
# Fixed event time and version: publishing the set again changes nothing (duplicates).
PUBLISHED = datetime(2026, 1, 1, tzinfo=UTC)
DEMO_SENTENCES = (
    "A cat is sleeping on the sofa.",
    "A kitten naps on the couch.",
    "The central bank raised interest rates again.",
    "Inflation pushed the Federal Reserve to tighten policy.",
    "How do I bake sourdough bread at home?",
    "A simple recipe for homemade bread with a crispy crust.",
)
DOCUMENTS = {
    "doc-cat-care": (
        "Cat care",
        "Cats sleep up to sixteen hours a day and like a warm, quiet spot.",
        ["pets"],
    ),
    "doc-espresso": (
        "Espresso",
        "Espresso is brewed by forcing hot water through finely ground coffee.",
        ["food"],
    ),
    "doc-launch": (
        "Launch day",
        "The rocket lifted off from the launch pad into a clear morning sky.",
        ["space"],
    ),
    "doc-spacewalk": (
        "Spacewalk",
        "An astronaut in a white suit floated outside the space station.",
        ["space"],
    ),
    "doc-photo-gear": (
        "Photo gear",
        "A photographer set up the camera on a tripod before sunrise.",
        ["photo"],
    ),
    "doc-farm": (
        "Farm morning",
        "The rooster crowed, the cows mooed and the pigs waited for breakfast.",
        ["farm"],
    ),
    "doc-invoice": (
        "Reminder",
        "Payment reminder: invoice INV-2024-00731 is due in seven days.",
        ["finance"],
    ),
    "doc-bread": ("Sourdough", "A simple recipe for homemade sourdough bread with a crispy crust.", ["food"]),
}


def publish_samples(bootstrap: str) -> tuple[int, dict[int, int]]:
    """Publish the sample set; returns the event count and the last offset per partition."""
    events = [
        text_event(TENANT, item, text, title=title, tags=tags, source="demo", version=1, event_time=PUBLISHED)
        for item, (title, text, tags) in DOCUMENTS.items()
    ]
    for path in sorted((SAMPLES / "images").glob("*")):
        events.append(
            media_event(
                TENANT, f"photo:{path.name}", path.read_bytes(), common_pb2.MODALITY_IMAGE,
                title=path.stem, tags=["photo"], source="scikit-image", version=1, event_time=PUBLISHED,
            )
        )  # fmt: skip
    for path in sorted((SAMPLES / "audio").glob("*")):
        events.append(
            media_event(
                TENANT, f"sound:{path.name}", path.read_bytes(), common_pb2.MODALITY_AUDIO,
                title=path.stem, tags=["animal"], source="ovos", version=1, event_time=PUBLISHED,
            )
        )  # fmt: skip
    with ContentProducer(bootstrap) as producer:
        for event in events:
            producer.publish(event)
        last = producer.flush()
    return len(events), last


def wait_indexed(
    channel: grpc.Channel, token: str, last: dict[int, int], timeout_s: float = 300.0
) -> indexer_pb2.GetStatusResponse:
    """Until the indexer has committed past the last published offset of every partition."""
    stub = indexer_pb2_grpc.IndexerAdminStub(channel)
    deadline = time.monotonic() + timeout_s
    while True:
        status: indexer_pb2.GetStatusResponse = stub.GetStatus(
            indexer_pb2.GetStatusRequest(), metadata=auth_metadata(token), timeout=30
        )
        committed = {p.partition: p.committed_offset for p in status.partitions if p.topic == status.topic}
        to_go = sum(max(0, offset + 1 - committed.get(partition, 0)) for partition, offset in last.items())
        if to_go == 0:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"the indexer did not catch up in {timeout_s:.0f}s: {status}")
        paused = f" (paused: {status.pause_reason})" if status.paused else ""
        print(f"  waiting for the indexer: {to_go} events to go{paused}")
        time.sleep(1)


def show(title: str, response: searcher_pb2.SearchResponse) -> None:
    print(f"\n{title}")
    for rank, hit in enumerate(response.hits, start=1):
        modality = common_pb2.Modality.Name(hit.modality).removeprefix("MODALITY_").lower()
        stages = " ".join(
            f"{name}={getattr(hit.scores, name):.3f}"
            for name in ("vector", "bm25", "fused", "rerank")
            if hit.scores.HasField(name)
        )
        label = hit.metadata.title or hit.item_id
        snippet = f"  {hit.preview.snippet[:60]!r}" if hit.preview.snippet and modality == "text" else ""
        print(f"  {rank}. {label:22s} {modality:6s} {hit.score:6.3f}  [{stages}]{snippet}")
    if response.degraded:
        print(f"  (degraded: {'; '.join(response.degraded_reasons)})")


def cross_modal_demo(addr: str, token: str, bootstrap: str) -> None:
    if not (SAMPLES / "images").is_dir() or not (SAMPLES / "audio").is_dir():
        print(f"\n(no sample files in {SAMPLES}: run `make samples`)", file=sys.stderr)
        return
    count, last = publish_samples(bootstrap)
    print(f"\nPublished {count} content events (8 documents, photos, animal sounds) to Kafka at {bootstrap}.")
    with grpc.insecure_channel(addr, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        status = wait_indexed(channel, token, last)
        spaces = ", ".join(f"{s.space}: {s.item_count} items" for s in status.spaces)
        print(f"Indexed and searchable ({spaces}).")
        stub = searcher_pb2_grpc.SearcherStub(channel)
        metadata = auth_metadata(token)

        def search(title: str, **request: object) -> None:
            show(title, stub.Search(searcher_pb2.SearchRequest(**request), metadata=metadata, timeout=60))  # type: ignore[arg-type]

        text = common_pb2.Content
        images_only = [common_pb2.MODALITY_IMAGE]
        search(
            "Text -> image: 'a photo of a cat'",
            query=text(text="a photo of a cat"),
            modalities=images_only,
            top_k=3,
        )
        search(
            "Text -> image: 'a cup of coffee'",
            query=text(text="a cup of coffee"),
            modalities=images_only,
            top_k=3,
        )
        coffee = (SAMPLES / "images" / "coffee.png").read_bytes()
        search(
            "Image -> text: the documents nearest to coffee.png",
            query=text(image=common_pb2.Media(data=coffee)),
            modalities=[common_pb2.MODALITY_TEXT],
            top_k=3,
        )
        search("Text -> text and images: 'space travel'", query=text(text="space travel"), top_k=4)
        search(
            "Hybrid (BM25 + vector, RRF) for an identifier: '00731'",
            query=text(text="00731"),
            modalities=[common_pb2.MODALITY_TEXT],
            top_k=3,
            hybrid=searcher_pb2.HybridOptions(enabled=True),
        )
        search(
            "Reranked (MaxSim) text search: 'how to make bread'",
            query=text(text="how to make bread"),
            modalities=[common_pb2.MODALITY_TEXT],
            top_k=3,
            rerank=searcher_pb2.RerankOptions(enabled=True, top_n=8),
        )
        dog = (SAMPLES / "audio" / "dog.mp3").read_bytes()
        search(
            "Sound -> sound: dog.mp3 in the aisfx@1 space",
            query=text(audio=common_pb2.Media(data=dog)),
            space=common_pb2.SpaceRef(name="audio"),
            top_k=3,
        )


def run_demo(addr: str, token: str) -> int:
    print(f"\nEmbedding {len(DEMO_SENTENCES)} sentences through {addr} (Embedder.Embed -> Triton):\n")
    response = embed_texts(addr, token, DEMO_SENTENCES, "", 30.0)
    print_embeddings(response, DEMO_SENTENCES, as_json=False)
    vectors = np.asarray([e.vector.values for e in response.embeddings])
    similarity = vectors @ vectors.T
    print("\nNearest neighbour of each sentence:")
    for i, row in enumerate(similarity):
        masked = row.copy()
        masked[i] = -np.inf
        j = int(np.argmax(masked))
        print(f"  {DEMO_SENTENCES[i]!r}\n      -> {DEMO_SENTENCES[j]!r} ({row[j]:.2f})")
    cross_modal_demo(addr, token, default_bootstrap())
    print("\nHealth:")
    for service in HEALTH_SERVICES:
        print(f"  {service or '(overall)':26s} {health_status(addr, service)}")
    print(
        "\nThe stack keeps running: try `.venv/bin/grpcurl -plaintext "
        f'{addr} list`, `.venv/bin/mmsearch embed "some text"`; stop it with `make down`.'
    )
    return 0
