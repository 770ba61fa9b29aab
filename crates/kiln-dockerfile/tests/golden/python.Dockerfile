# syntax=docker/dockerfile:1
ARG PYTHON_VERSION=3.12
FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=off
WORKDIR /app

FROM base AS builder
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt,sharing=locked \
    apt-get update && apt-get install -y --no-install-recommends build-essential
RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,source=requirements.txt,target=requirements.txt \
    pip install -r requirements.txt

FROM base AS runtime
ARG UID=10001
RUN <<EOF
set -e
adduser --disabled-password --gecos "" --uid "${UID}" appuser
mkdir -p /app/data
EOF
COPY --from=builder /opt/venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"
COPY --chown=appuser:appuser . .
RUN --mount=type=secret,id=sentry_dsn,env=SENTRY_DSN \
    python manage.py collectstatic --noinput
USER appuser
VOLUME /app/data
EXPOSE 8000
STOPSIGNAL SIGINT
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "app.wsgi"]
