# The broker API. The same image runs `broker init` (migrations, bucket, webhook
# subscription) as the compose stack's one-shot `migrate` service.

# Both stages use the same base image, so the venv's python symlink and the `broker`
# script's shebang (#!/opt/venv/bin/python) stay valid after the venv is copied.
FROM python:3.11.16-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# An empty working directory: relative paths given at run time resolve here, not in /.
WORKDIR /app

# Dependencies first, read from pyproject.toml alone: this layer is rebuilt only when
# pyproject.toml changes, not on every code change.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# Code last: a regular (non-editable) install into the venv. The migrations ship inside
# the package as broker.migrations (see pyproject.toml), and queries.sql as package data,
# so the runtime image needs nothing but the venv.
COPY broker ./broker
COPY migrations ./migrations
RUN pip install --no-deps .

FROM python:3.11.16-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# libmagic: content sniffing at finalization (python-magic loads it when the broker starts).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmagic1=1:5.44-3 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 broker \
 && useradd --system --no-log-init --uid 10001 --gid broker \
      --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin broker
# Owned by root and read-only for the broker user: the code cannot be changed at run time.
COPY --from=builder /opt/venv /opt/venv
# An empty working directory: relative paths given at run time resolve here, not in /.
WORKDIR /app
# Numeric, so a runtime (e.g. runAsNonRoot) can tell it is not root without /etc/passwd.
USER 10001:10001
EXPOSE 8000
# /readyz checks PostgreSQL and MinIO; urlopen raises (exit 1) on anything but 2xx.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
ENTRYPOINT ["broker"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
