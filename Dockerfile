# syntax=docker/dockerfile:1
# LotaBots, CPU image: every process (`lotabots serve gateway|auth|usage`,
# `lotabots worker inference|results|webhooks|usage-stream`) runs from this one image;
# the ONNX model is built into it at build time (no torch, no network at run time).
#
#   docker build -t lotabots:0.1.0 .
#   docker run --rm -p 8000:8000 lotabots:0.1.0 serve gateway
#
# No secret is baked in: database URLs, passwords and keys come from the environment.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the package and its runtime dependencies in a virtualenv ---------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
COPY lotabots/ lotabots/
COPY schemas/ schemas/
COPY gateway/ gateway/
COPY consumers/ consumers/
COPY streams/ streams/
COPY inference/ inference/
RUN python -m venv /opt/lotabots/venv \
    && /opt/lotabots/venv/bin/pip install --no-cache-dir .

# --- model: GGUF -> ONNX with the model-build extra, which stays out of the final image ----
FROM build AS model
ENV LOTABOTS_DATA_DIR=/tmp/lotabots \
    LOTABOTS_MODEL_DIR=/opt/lotabots/models
RUN /opt/lotabots/venv/bin/pip install --no-cache-dir ".[model-build]" \
    && /opt/lotabots/venv/bin/lotabots model build

# --- runtime: slim base, non-root, read-only friendly -------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 lotabots \
    && useradd --system --uid 10001 --gid lotabots --home-dir /var/lib/lotabots --no-create-home \
       --shell /usr/sbin/nologin lotabots \
    && install -d -o lotabots -g lotabots /var/lib/lotabots
COPY --from=build /opt/lotabots/venv /opt/lotabots/venv
COPY --from=model /opt/lotabots/models /opt/lotabots/models
ENV PATH=/opt/lotabots/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOTABOTS_DATA_DIR=/var/lib/lotabots \
    LOTABOTS_MODEL_DIR=/opt/lotabots/models \
    LOTABOTS_INFERENCE_DEVICE=cpu \
    LOTABOTS_GATEWAY_HOST=0.0.0.0
WORKDIR /var/lib/lotabots
USER 10001:10001
# gateway, auth, usage service; workers' /metrics and /healthz
EXPOSE 8000 8001 8002 9100
ENTRYPOINT ["lotabots"]
CMD ["serve", "gateway"]
