# One image for every role of rinha: `rinha api ...` and `rinha worker ...` (see docker-compose.yml).
# Stage 1 builds the wheels once; stage 2 installs them into a slim image without compilers.
FROM --platform=linux/amd64 python:3.11-slim AS wheels
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY rinha ./rinha
RUN pip wheel --wheel-dir /wheels .

FROM --platform=linux/amd64 python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheels /wheels /wheels
RUN pip install --no-index --find-links=/wheels rinha \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin rinha \
    && mkdir -p /run/rinha /data \
    && chown rinha:rinha /run/rinha /data
# The API nodes' Unix sockets, and the worker's store: named volumes mounted here start with
# this owner.
VOLUME ["/run/rinha", "/data"]
USER rinha
# Checks the role its environment describes: RINHA_API_SOCKET (API node) or RINHA_WORKER_LISTEN.
HEALTHCHECK --interval=5s --timeout=2s --start-period=5s --retries=3 CMD ["python", "-m", "rinha.probe"]
ENTRYPOINT ["rinha"]
CMD ["--help"]
