# One image for the API and the workers.  CPU by default; the GPU worker builds it with
#   --build-arg TORCH_VARIANT=cu128
# which installs the CUDA build of the same torch version (the host needs the NVIDIA container toolkit).
FROM python:3.11-slim

ARG TORCH_VARIANT=cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# torch first, from the PyTorch index for the chosen variant; requirements.lock's torch==2.13.0 is then
# already satisfied by 2.13.0+<variant>, so the lock cannot pull a different build.
COPY requirements.lock ./
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" "torch==2.13.0" \
 && pip install -r requirements.lock

COPY pyproject.toml alembic.ini README.md ./
COPY api ./api
COPY worker ./worker
COPY trainer ./trainer
COPY narrownet ./narrownet
COPY migrations ./migrations
RUN pip install --no-deps .

RUN useradd --create-home --uid 10001 narrownet \
 && mkdir -p /var/lib/narrownet/artifacts \
 && chown -R narrownet /var/lib/narrownet
USER narrownet
ENV NARROWNET_HOME=/var/lib/narrownet \
    NARROWNET_ARTIFACT_DIR=/var/lib/narrownet/artifacts
VOLUME ["/var/lib/narrownet/artifacts"]
EXPOSE 8000
CMD ["narrownet", "--help"]
