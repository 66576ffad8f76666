"""The cross-modal part of `mmsearch demo`: bundled photos found by sentences,
text read from images, and sounds compared with sounds, all through the
Embedder API of a running stack."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np

from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc
from services.client import auth_metadata

SAMPLES = Path(__file__).resolve().parent.parent / ".cache" / "samples"
QUERIES = ("a photo of a cat", "a cup of coffee", "a rocket launch", "a page of printed text", "a horse")


def _embed(
    stub: embedder_pb2_grpc.EmbedderStub, token: str, items: Sequence[common_pb2.Content], space: str = ""
) -> np.ndarray:
    request = embedder_pb2.EmbedRequest(space=common_pb2.SpaceRef(name=space), items=list(items))
    response = stub.Embed(request, metadata=auth_metadata(token), timeout=120)
    return np.asarray([e.vector.values for e in response.embeddings], dtype=np.float32)


def cross_modal_demo(addr: str, token: str) -> None:
    photos = sorted((SAMPLES / "images").glob("*"))
    sounds = sorted((SAMPLES / "audio").glob("*.mp3"))
    if not photos or not sounds:
        print(f"\n(no sample files in {SAMPLES}: run `make samples` for the cross-modal part)")
        return
    with grpc.insecure_channel(addr, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        images = [common_pb2.Content(image=common_pb2.Media(data=p.read_bytes())) for p in photos]
        photo_vectors = _embed(stub, token, images)
        query_vectors = _embed(stub, token, [common_pb2.Content(text=q) for q in QUERIES])
        print(f"\nText -> image: {len(photos)} bundled photos (scikit-image) in the same space as text:")
        for query, scores in zip(QUERIES, query_vectors @ photo_vectors.T, strict=True):
            top = np.argsort(-scores)[:3]
            ranked = ", ".join(f"{photos[i].name} ({scores[i]:.2f})" for i in top)
            print(f"  {query!r:28s} -> {ranked}")

        page = next((p for p in photos if p.name == "page.png"), photos[0])
        ocr = stub.ExtractText(
            embedder_pb2.ExtractTextRequest(images=[common_pb2.Media(data=page.read_bytes())]),
            metadata=auth_metadata(token),
            timeout=120,
        )
        lines = [b.text for b in ocr.results[0].blocks]
        print(f"\nImage -> text (OCR, ExtractText) of {page.name}: {lines[:6]}")

        clips = [common_pb2.Content(audio=common_pb2.Media(data=p.read_bytes())) for p in sounds]
        sound_vectors = _embed(stub, token, clips, space="audio")
        similarity = sound_vectors @ sound_vectors.T
        print(f"\nSound -> sound: {len(sounds)} animal clips in the aisfx@1 space, nearest other clip:")
        np.fill_diagonal(similarity, -np.inf)
        for i, row in enumerate(similarity):
            j = int(np.argmax(row))
            print(f"  {sounds[i].stem:8s} -> {sounds[j].stem} ({similarity[i, j]:.2f})")
