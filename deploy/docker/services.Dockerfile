# syntax=docker/dockerfile:1
# The services' image: one image, one Deployment per target (`mmsearch serve --target X`).
# Build from the repository root after `make proto` (the generated mmsearch/v1 code is
# gitignored):  docker build -f deploy/docker/services.Dockerfile --target runtime -t mmsearch .
# Same Python and the same pinned set as the Makefile's .venv (requirements/services.lock.txt);
# tests/chart/test_images.py keeps them in step. Runtime packages only: the lock's test and lint
# tools are left out by installing the runtime names under the lock as constraints.

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/mmsearch
COPY requirements/services.lock.txt requirements/services.lock.txt
# Runtime dependencies (requirements/services.in without the dev/test block), at the lock's versions.
RUN /opt/mmsearch/bin/pip install -c requirements/services.lock.txt \
        weaviate-client "tritonclient[grpc]" grpcio grpcio-health-checking grpcio-reflection \
        protobuf kafka-python prometheus-client opentelemetry-sdk \
        opentelemetry-exporter-otlp-proto-grpc opentelemetry-instrumentation-grpc structlog \
        qdrant-edge-py "psycopg[binary]" psycopg-pool pgvector numpy pydantic-settings pillow \
        soundfile soxr crc32c starlette uvicorn python-multipart \
    && /opt/mmsearch/bin/pip check
COPY pyproject.toml README.md ./
COPY mmsearch mmsearch
RUN test -f mmsearch/v1/.generated || { echo "run make proto before building the image" >&2; exit 1; } \
    && /opt/mmsearch/bin/pip install --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
# libsndfile comes inside the soundfile wheel; nothing else is needed from the OS.
RUN groupadd --system --gid 10001 mmsearch \
    && useradd --system --uid 10001 --gid mmsearch --no-create-home --shell /usr/sbin/nologin mmsearch
COPY --from=build /opt/mmsearch /opt/mmsearch
ENV PATH=/opt/mmsearch/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MMSEARCH_GRPC_HOST=0.0.0.0 MMSEARCH_METRICS_HOST=0.0.0.0
USER 10001:10001
EXPOSE 50051 9464
ENTRYPOINT ["mmsearch"]
CMD ["serve", "--target", "all"]

# One stage per Deployment, so `--target searcher` builds an image that runs the searcher.
FROM runtime AS embedder
CMD ["serve", "--target", "embedder"]
FROM runtime AS indexer
CMD ["serve", "--target", "indexer"]
FROM runtime AS searcher
CMD ["serve", "--target", "searcher"]
FROM runtime AS reranker
CMD ["serve", "--target", "reranker"]
