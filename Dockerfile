# The Conduit API: gunicorn + gevent workers, migrations applied at start.
# Build: docker build -t conduit .   Run: docker run -e APP_ENV=production -e SECRET_KEY=... \
#   -e DATABASE_URL=postgresql://... -p 8000:8000 conduit
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY config ./config
COPY service ./service
COPY gunicorn.conf.py ./

RUN useradd --system --uid 10001 --home /app conduit && mkdir -p /app/var && chown conduit /app/var
USER conduit

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/healthz', timeout=2)"

# Every replica applies pending migrations at start (safe concurrently: they
# take a lock), then gunicorn replaces the shell so it receives SIGTERM.
ENTRYPOINT ["/bin/sh", "-c", "flask --app service db upgrade && exec gunicorn -c gunicorn.conf.py \"$@\"", "--"]
