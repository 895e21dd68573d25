# voiceserver: local models baked in at build time; no model hub is contacted at run time.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY voiceserver ./voiceserver
COPY models/manifest.toml ./models/manifest.toml
COPY static ./static

# llama-cpp-python compiles here (several minutes on a small machine); the models are assembled and verified.
RUN pip install --no-cache-dir -e ".[local,webrtc]" \
 && voiceserver models fetch \
 && apt-get purge -y build-essential cmake && apt-get autoremove -y

ENV LANCEDB_URI=/data/memory
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
CMD ["voiceserver", "serve", "--host", "0.0.0.0", "--port", "8080"]
