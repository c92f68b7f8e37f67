# syntax=docker/dockerfile:1
#
# One image for every ordersync process: worker, beat, Flower, web, and in the demo profile
# zohosim and the seeder. docker-compose.yml picks the command and the health check of each.
# No secret is baked in: configuration comes at run time from ORDERSYNC_* variables
# (deploy/ordersync.env) or a mounted ordersync.toml ($ORDERSYNC_CONFIG).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the project and its dependencies into a virtualenv ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/ordersync
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cli ./cli
COPY pipeline ./pipeline
COPY tasks ./tasks
COPY zohosim ./zohosim
RUN /opt/ordersync/bin/pip install . \
    && cd / && /opt/ordersync/bin/ordersync --help > /dev/null

# --- run: the virtualenv only, as an unprivileged user ---------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/ordersync/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORDERSYNC_SYNC_WORK_DIR=/var/lib/ordersync/work
RUN groupadd --system --gid 10001 ordersync \
    && useradd --system --uid 10001 --gid ordersync --home-dir /var/lib/ordersync \
       --no-create-home --shell /usr/sbin/nologin ordersync \
    && mkdir -p /var/lib/ordersync/work \
    && chown -R ordersync:ordersync /var/lib/ordersync
COPY --from=build /opt/ordersync /opt/ordersync
WORKDIR /var/lib/ordersync
USER ordersync:ordersync

# A generic check: the settings load and validate. Each compose service replaces it with one
# that suits the process (worker: control ping; web: /healthz; Flower: /healthcheck).
HEALTHCHECK --interval=60s --timeout=20s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import pipeline.settings as s; s.load_settings()"]

# Celery stops warmly on SIGTERM (finishes the running task, acks_late redelivers the rest).
STOPSIGNAL SIGTERM
CMD ["ordersync", "--help"]
