# One image for every Relay process. The default command is the web intake; the others run
# the same image with another command (see the Procfile and docker-compose.yml):
#   release: relay db upgrade
#   worker:  relay worker --loglevel INFO --concurrency 4
#   beat:    celery -A workers --quiet beat --loglevel INFO -S redbeat.RedBeatScheduler
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RELAY_INSTANCE_PATH=/app/instance

WORKDIR /app

# Exactly the versions uv.lock pins, their hashes checked, without the test extras (uv exports
# them for pip, then goes); then Relay itself. Every dependency is a wheel (psycopg[binary]
# included): no compiler needed.
# No .env goes into the image (.dockerignore): a container is configured by its environment
# (compose's environment:, `docker run --env-file .env`, the platform's settings). Every process
# also reads a .env in its working directory, /app, if one is mounted there; the environment wins.
COPY . .
RUN pip install --no-cache-dir uv==0.13.8 \
    && uv export --quiet --locked --no-emit-project --no-header --output-file /tmp/requirements.txt \
    && pip install --no-cache-dir --require-hashes -r /tmp/requirements.txt \
    && pip install --no-cache-dir --no-deps . \
    && pip uninstall --yes uv && rm /tmp/requirements.txt \
    && useradd --create-home --uid 10001 relay \
    && mkdir -p /app/instance \
    && chown relay /app/instance

USER relay

EXPOSE 8000
CMD ["gunicorn", "web:create_app()", "-c", "gunicorn.conf.py"]
