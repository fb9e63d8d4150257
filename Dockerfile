# candlewax container image: `docker build -t ghcr.io/candlewax/candlewax:0.1.0 .`
# Multi-stage: the chart library comes from a Node stage, wheels are built in the next; the
# runtime stage has no compiler and no Node, runs as a non-root user (10001) with a read-only
# root filesystem in mind (writes go to /tmp and the mounted volumes), and its entry point is
# the `candlewax` command.

# The chart pages' library (package-lock.json, as `make web`): the live page and the backtest
# report need its standalone build in sinks/gateway/static/vendor/. Only this stage has Node.
FROM node:20.20.2-bookworm-slim AS web
WORKDIR /web
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --omit=dev \
 && mkdir vendor \
 && cp node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js \
       node_modules/lightweight-charts/LICENSE vendor/

FROM python:3.12.8-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY candlewax ./candlewax
COPY connectors ./connectors
COPY flows ./flows
COPY sinks ./sinks
COPY --from=web /web/vendor ./sinks/gateway/static/vendor
RUN python -m venv /opt/candlewax \
 && /opt/candlewax/bin/pip install --upgrade pip \
 && /opt/candlewax/bin/pip install .

FROM python:3.12.8-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="candlewax" \
      org.opencontainers.image.description="Exchange trades in, exact event-time bars and volatility alerts out, on Kafka and Bytewax" \
      org.opencontainers.image.source="https://github.com/candlewax/candlewax" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 candlewax \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin candlewax \
 && mkdir -p /var/lib/candlewax \
 && chown 10001:10001 /var/lib/candlewax
COPY --from=build /opt/candlewax /opt/candlewax
ENV PATH=/opt/candlewax/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    CANDLEWAX_METRICS_HOST=0.0.0.0 \
    CANDLEWAX_GATEWAY__HOST=0.0.0.0
USER 10001:10001
WORKDIR /var/lib/candlewax
# /metrics of every process; the gateway's streams, REST, page and /metrics (candlewax serve).
EXPOSE 9464 8080
ENTRYPOINT ["candlewax"]
CMD ["--help"]
