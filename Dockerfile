# syntax=docker/dockerfile:1
# One image for the taxi_assets code location: docker-compose.yaml runs the gRPC code server, the
# webserver and the daemon from it, and the DockerRunLauncher starts every run container from it
# (the code server reports it as DAGSTER_CURRENT_IMAGE), so all of them run the same locked code.
# The `bqemulator` stage is the BigQuery emulator for the compose stack, nothing else.

ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM python:${PYTHON_VERSION}-slim-bookworm AS base
COPY --from=uv /uv /usr/local/bin/uv
# Nothing here needs root. A fixed uid keeps one owner for the named volumes across rebuilds.
RUN groupadd --system --gid 10001 taxi \
 && useradd --system --uid 10001 --gid taxi --create-home --home-dir /home/taxi taxi
# The image's own Python only: uv must not fetch another interpreter at build time.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PYTHONUNBUFFERED=1

# bqemulator lives in its own virtualenv for the reason scripts/install_bqemulator.sh gives; the
# launcher adds the fixes the suite's emulator needs. Persistence is ephemeral, as in the tests.
FROM base AS bqemulator
ENV BQEMULATOR_VENV=/opt/bqemulator/venv
COPY scripts/install_bqemulator.sh /opt/bqemulator/install_bqemulator.sh
# The launcher installs the spatial extension into the venv at start-up: the venv is the user's.
RUN UV_NO_CACHE=1 bash /opt/bqemulator/install_bqemulator.sh \
 && chown -R taxi:taxi "$BQEMULATOR_VENV"
COPY taxi_assets_tests/emulators/bq_launcher.py /opt/bqemulator/bq_launcher.py
ENV PATH=/opt/bqemulator/venv/bin:$PATH \
    BQEMU_UPLOAD_STAGING_DIR=/tmp/bq-uploads
USER taxi
WORKDIR /opt/bqemulator
EXPOSE 9050
CMD ["python", "/opt/bqemulator/bq_launcher.py", "--host", "0.0.0.0", "--port", "9050"]

# The code location (the default target).
FROM base AS app
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /opt/taxi_assets
# Dependencies first, as uv.lock pins them (--frozen: the lock is the truth, never re-resolved),
# in a layer that survives edits to the code.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY taxi_assets ./taxi_assets
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev
# The dbt project's manifest, parsed here so no container parses it
# (defs/analytics/dbt_project.py). Runs keep their dbt artifacts under TAXI_HOME.
RUN python -c "from taxi_assets.defs.analytics.dbt_project import prepared_manifest; prepared_manifest()"
COPY dagster.yaml ./
COPY deploy ./deploy
# DAGSTER_HOME holds the stack's instance: the project's dagster.yaml with the Docker run launcher,
# built here so the two can never drift apart. TAXI_HOME is the `taxi_assets_home` volume that code
# server, webserver, daemon and run containers share (staging Parquet, compute logs);
# /opt/dagster/gcp is the `taxi_assets_gcp` volume for an optional service-account key.
ENV DAGSTER_HOME=/opt/dagster/dagster_home \
    TAXI_HOME=/opt/dagster/taxi_home
RUN mkdir -p "$DAGSTER_HOME" "$TAXI_HOME" /opt/dagster/gcp \
 && (sed '/^run_launcher:/,$d' dagster.yaml; cat deploy/run_launcher.yaml) > "$DAGSTER_HOME/dagster.yaml" \
 && chown -R taxi:taxi /opt/dagster
USER taxi
EXPOSE 4000 3000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "taxi_assets.definitions"]
