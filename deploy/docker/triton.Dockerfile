# syntax=docker/dockerfile:1
# NVIDIA Triton with this repository's model_repository/ (built by `make models` first: the
# ONNX exports are gitignored). Two variants from one file:
#   --target gpu  NVIDIA's tritonserver 24.10 image (Triton 2.51.0, CUDA, python backend)
#   --target cpu  tritonserver 2.51.0 from the nvidia-pytriton wheel, exactly as `make install`
#                 sets it up for the local stack and the tests (requirements/triton.lock.txt)
# Build from the repository root:
#   docker build -f deploy/docker/triton.Dockerfile --target gpu -t mmsearch-triton .
# The python-backend models' packages are the lock's versions (tests/chart/test_images.py).

ARG TRITON_GPU_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${TRITON_GPU_IMAGE} AS gpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY requirements/triton.lock.txt /tmp/triton.lock.txt
# What the python-backend models import, at the lock's versions (the server comes with the image).
RUN python3 -m pip install -c /tmp/triton.lock.txt \
        numpy onnxruntime tokenizers opencv-python-headless \
    && rm /tmp/triton.lock.txt
COPY --chown=1000:1000 model_repository /models
RUN test -f /models/.built || { echo "run make models before building the image" >&2; exit 1; }
# The base image's unprivileged user (uid 1000).
USER 1000:1000
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/models", "--model-control-mode=explicit", "--load-model=*", "--strict-readiness=true"]

FROM ${PYTHON_IMAGE} AS cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/triton
COPY requirements/triton.lock.txt /tmp/triton.lock.txt
COPY scripts/prepare_triton_venv.py /tmp/prepare_triton_venv.py
RUN /opt/triton/bin/pip install -r /tmp/triton.lock.txt \
    && /opt/triton/bin/python /tmp/prepare_triton_venv.py \
    && ln -s /opt/triton/lib/python3.11/site-packages/pytriton/tritonserver /opt/tritonserver \
    && rm /tmp/triton.lock.txt /tmp/prepare_triton_venv.py
RUN groupadd --system --gid 10001 triton \
    && useradd --system --uid 10001 --gid triton --no-create-home --shell /usr/sbin/nologin triton
COPY --chown=10001:10001 model_repository /models
RUN test -f /models/.built || { echo "run make models before building the image" >&2; exit 1; }
# The stub finds its Python through PATH; it links the interpreter's libpython (PLATFORM notes).
ENV PATH=/opt/triton/bin:/opt/tritonserver/bin:$PATH LD_LIBRARY_PATH=/usr/local/lib
USER 10001:10001
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver", "--backend-directory=/opt/tritonserver/backends"]
CMD ["--model-repository=/models", "--model-control-mode=explicit", "--load-model=*", "--strict-readiness=true", \
     "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0"]
