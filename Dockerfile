# portex-pay: the gRPC + HTTP payment service, as a small non-root image.
# Build: docker build -t portex-pay .   Run with docker-compose.yml, or set DATABASE_URL and
# PORTEX_PAYLOAD_SECRET and PORTEX_DATA_KEY yourself.

# Both stages must use the same Python: the venv copied between them points at its interpreter.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Third-party dependencies first, read from the two pyproject files alone, so that this layer is
# rebuilt only when they change, not on every source edit. portex-pay-client is skipped here: it
# is the local package installed below.
COPY pyproject.toml ./
COPY clients/python/pyproject.toml clients/python/
RUN python -c "import tomllib; print('\n'.join(d for f in ('pyproject.toml', 'clients/python/pyproject.toml') for d in tomllib.load(open(f, 'rb'))['project']['dependencies'] if not d.startswith('portex-pay-client')))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# Then the two local packages (the client carries the committed generated stubs).
COPY clients/python clients/python
COPY server server
COPY README.md ./
RUN pip install ./clients/python . \
    && pip check

FROM ${PYTHON_IMAGE}
# A fixed numeric uid, so that orchestrators enforcing runAsNonRoot can verify it.
RUN useradd --system --user-group --uid 10001 --no-create-home --shell /usr/sbin/nologin portex
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORTEX_GRPC_ADDR=0.0.0.0:50051 \
    PORTEX_HTTP_ADDR=0.0.0.0:8080
USER 10001:10001
WORKDIR /home/portex
EXPOSE 50051 8080
# Asks the gRPC health service (grpc.health.v1) on PORTEX_GRPC_ADDR; exits 0 when SERVING.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["portex-pay", "healthcheck"]
CMD ["portex-pay", "serve"]
