# syntax=docker/dockerfile:1
# One image for the API, the workers and the reconciler, with the runtime dependencies only (requirements.lock and
# the lock of the torch build; the dev tools stay out). It builds the same way everywhere:
#   docker build .                                      CPU torch: PyPI plus the PyTorch CPU index
#   docker build --build-arg TORCH_VARIANT=cu130 .      CUDA 13.0 torch (PyPI's Linux build) for the GPU worker
#   docker build --network none --build-arg WHEELS=wheels .
#       offline: pip reads only the build context's wheels/ folder, which must hold every wheel the two locks name
#       (tests/compose/ builds so, on a Debian base: --build-arg BASE_IMAGE=...).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE}
ARG TORCH_VARIANT=cpu
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG WHEELS=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/narrownet/bin:$PATH
COPY requirements.lock requirements-${TORCH_VARIANT}.lock /tmp/locks/
# A venv, so the image's Python packages are exactly the locks' whatever the base ships. Only the CPU build comes
# from the PyTorch index: the locks pin torch==2.13.0+cpu there, PyPI's torch==2.13.0 (the CUDA build) otherwise.
# The build context is bind-mounted for this step only, so the wheels folder never lands in a layer.
RUN --mount=type=bind,target=/context \
    set -eu; \
    if [ -n "$WHEELS" ]; then source="--no-index --find-links /context/$WHEELS"; \
    elif [ "$TORCH_VARIANT" = cpu ]; then source="--index-url $PIP_INDEX_URL --extra-index-url $TORCH_INDEX_URL"; \
    else source="--index-url $PIP_INDEX_URL"; fi; \
    python3 -m venv /opt/narrownet; \
    /opt/narrownet/bin/pip install $source \
        -r /tmp/locks/requirements.lock -r "/tmp/locks/requirements-${TORCH_VARIANT}.lock"

RUN useradd --create-home --uid 10001 narrownet \
 && mkdir -p /var/lib/narrownet/artifacts /var/lib/narrownet/data \
 && chown -R narrownet /var/lib/narrownet

WORKDIR /app
COPY pyproject.toml alembic.ini README.md ./
COPY core ./core
COPY api ./api
COPY worker ./worker
COPY trainer ./trainer
COPY narrownet ./narrownet
COPY migrations ./migrations
# setuptools is pinned in requirements.lock (torch needs it), so the build needs no index either.
RUN pip install --no-deps --no-build-isolation . && rm -rf build ./*.egg-info

USER narrownet
ENV NARROWNET_HOME=/var/lib/narrownet \
    NARROWNET_ARTIFACT_DIR=/var/lib/narrownet/artifacts \
    NARROWNET_DATA_DIR=/var/lib/narrownet/data
VOLUME ["/var/lib/narrownet/artifacts"]
EXPOSE 8000
CMD ["narrownet", "--help"]
