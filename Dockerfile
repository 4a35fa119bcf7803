# Portico in a container: the image the compose file in deploy/ runs as every replica (and as the llm-katan demo
# upstream). Build: docker build -t portico .
FROM python:3.11-slim-bookworm

# llama-cpp-python compiles llama.cpp from source (a portable x86-64 build, as the Makefile does).
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git curl \
    && rm -rf /var/lib/apt/lists/*
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF" PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1

WORKDIR /app
# torch first and pinned, as the Makefile does. Set PIP_INDEX_URL (build arg) to a CPU-only wheel index to keep the
# image small; the default index's Linux wheel carries CUDA libraries.
ARG PIP_INDEX_URL
RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY src ./src
# The server, plus llm-katan for the compose file's demo upstream (drop it for production images).
RUN pip install . llm-katan

# State (the SQLite default, the usage spool) lives here: mount a volume per replica so a restarted container
# writes the usage rows a killed one left behind.
VOLUME /var/lib/portico
ENV PORTICO_STATE_DIR=/var/lib/portico
EXPOSE 8080
# SIGTERM (docker stop) drains: no new connections, requests and streams in flight finish within
# server.drain_seconds, queued usage rows and traces are written. Give docker stop at least that long (-t / stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["portico"]
CMD ["serve", "--config", "/etc/portico/portico.yaml", "--host", "0.0.0.0", "--port", "8080"]
