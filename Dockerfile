# mockserver as a standalone service (see docs/service.md):
#   docker build -t mockserver .
#   docker run --rm -p 8080:8080 -e MOCKSERVER_ADMIN__TOKEN=change-me mockserver
# Settings come from MOCKSERVER_* variables (nested keys with "__"), or from a mounted TOML file:
#   docker run ... -v "$PWD/mockserver.toml:/etc/mockserver/mockserver.toml:ro" \
#       mockserver mockserver serve --config /etc/mockserver/mockserver.toml
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --system --gid 10001 mockserver \
    && useradd --system --uid 10001 --gid mockserver --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin mockserver

WORKDIR /opt/mockserver

# Dependencies first, from pyproject.toml alone (an empty stub stands in for the package), so that a
# change to the code or the README reuses this layer instead of reinstalling every dependency.
COPY pyproject.toml ./
RUN mkdir mockserver \
    && touch README.md mockserver/__init__.py \
    && pip install --no-cache-dir ".[redis]" \
    && pip uninstall --yes mockserver \
    && rm -rf mockserver README.md

# Then the package itself (README.md is part of its metadata).
COPY README.md ./
COPY mockserver ./mockserver
RUN pip install --no-cache-dir --no-deps . \
    && mockserver --help > /dev/null

USER 10001:10001

# In a container the server must listen beyond loopback, and then the admin API needs a token:
# pass MOCKSERVER_ADMIN__TOKEN at run time (or MOCKSERVER_ADMIN__ENABLED=false, which removes the admin
# API but keeps the health endpoint below). Without either, startup stops with a message naming both.
ENV MOCKSERVER_HOST=0.0.0.0 \
    MOCKSERVER_PORT=8080

EXPOSE 8080

# No curl in slim images: Python's urllib. /_admin/health needs no token and checks the store (Redis).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MOCKSERVER_PORT', '8080') + '/_admin/health', timeout=4)"]

CMD ["mockserver", "serve"]
