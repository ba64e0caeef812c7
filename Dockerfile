# Production image of b24-form-gateway: the package installed with pip on a slim Python base,
# run as a fixed non-root user, SQLite data in a volume. tests/test_dockerfile.py checks this file
# and runs its install and command lines in a fresh virtualenv (no Docker engine in CI).
#
#   docker build -t b24-form-gateway .
#   docker run -p 8000:8000 -v gateway-data:/app/data \
#     -e B24_WEBHOOK_URL=https://PORTAL/rest/1/SECRET/ b24-form-gateway
#
# The image listens on 0.0.0.0, so without B24_WEBHOOK_URL the container refuses to start (its log
# says what to set): sandbox mode lets anyone who reaches it read every lead. Add -e SANDBOX=true
# to try the sandbox in a container on purpose.
#
# Single stage on purpose: every dependency ships a manylinux wheel, so no compiler stage is needed.
FROM python:3.11-slim

ENV HOST=0.0.0.0 \
    PORT=8000 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The source goes in a scratch folder that is removed after the (non-editable) install, so the
# image holds the installed package only and /app is left for the data.
COPY pyproject.toml README.md ./src/
COPY app/ ./src/app/
RUN pip install --no-cache-dir ./src && rm -rf ./src

# A fixed uid/gid so a bind-mounted data folder can be chowned to 10001 on the host.
# The data folder is chowned before VOLUME: changes after the VOLUME line would be discarded.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin gateway \
    && mkdir -p /app/data \
    && chown gateway:gateway /app/data
VOLUME ["/app/data"]

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

EXPOSE 8000

# The slim image has no curl: probe with the standard library. Follows PORT if it is overridden.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=4)"]

# Exec form: the server is PID 1 and receives docker stop's SIGTERM for a graceful shutdown.
CMD ["b24-form-gateway", "serve"]
