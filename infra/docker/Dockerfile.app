# syntax=docker/dockerfile:1
# medsynth web app (Streamlit): generates labelled synthetic images from the registered champion.
# Build from the repository root:
#   docker build -f infra/docker/Dockerfile.app -t medsynth/app:0.1.0 .
# Runs on CPU; the model is pulled from MLflow by alias (MLFLOW_TRACKING_URI), never baked in.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: virtualenv with medsynth (CPU torch) ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml README.md params.yaml ./
COPY medsynth/ medsynth/
COPY components/ components/
COPY training/ training/
COPY monitoring/ monitoring/
COPY pipelines/ pipelines/
COPY app/ app/
RUN /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/python -c "import medsynth.app, streamlit"

# ---- runtime: non-root, no compilers, no source tree ----
FROM ${PYTHON_IMAGE}
# Recorded on every MLflow run (there is no .git in the image):
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) ...
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="medsynth app" \
      org.opencontainers.image.source="https://github.com/medsynth/medsynth" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 medsynth \
    && useradd --uid 10001 --gid 10001 --no-log-init --create-home --shell /usr/sbin/nologin medsynth
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY params.yaml ./
RUN mkdir -p .medsynth && chown medsynth:medsynth .medsynth
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MEDSYNTH_HOME=/app \
    MEDSYNTH_PARAMS=/app/params.yaml \
    MEDSYNTH_GIT_COMMIT=${GIT_COMMIT} \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    STREAMLIT_SERVER_HEADLESS=true
USER 10001:10001
EXPOSE 8501
# `medsynth app` runs streamlit on the installed app with the hardened settings (headless, no file
# watcher, no usage stats, no error details to users); MLFLOW_TRACKING_URI picks the registry.
ENTRYPOINT ["medsynth", "app"]
CMD ["--address=0.0.0.0", "--port=8501"]
