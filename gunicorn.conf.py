"""Gunicorn settings for the web process: `gunicorn 'web:create_app()' -c gunicorn.conf.py`.

Why each value that is not gunicorn's default:
- bind 0.0.0.0:$PORT (8000 without it): the platform's router connects from outside the
  container and tells the process which port to listen on.
- workers = $WEB_CONCURRENCY (2 without it): the platform (or the operator) sizes it to the
  machine; two processes keep answering while one is busy or restarting.
- threads = $WEB_THREADS (1 without it: gunicorn's sync worker). Measured here with
  bench/ingest (2-core machine), 4 threads (gthread) answered fewer webhooks than the sync
  worker, Relay and the bare app alike: a webhook is mostly CPU (validation, JSON, one
  statement), which threads share under the GIL. More than 10 would outgrow the database pool.
- timeout = 30: a webhook is answered in milliseconds (store, enqueue, 200); a worker stuck for
  30 s is killed and replaced. Heroku's router gives up after 30 s anyway.
- graceful_timeout = 25: Heroku sends SIGKILL 30 s after SIGTERM, so requests in flight get
  25 s to finish and the workers still exit before the kill.
- keepalive = 5: the PaaS router keeps connections open between requests; 5 s rather than 2
  avoids a reconnect per webhook in a burst.
- accesslog and errorlog "-": both to the process's output, where the platform collects logs.
- logconfig_dict: gunicorn's own loggers in Relay's log format (JSON lines when LOG_FORMAT,
  or its default for a non-terminal stderr, says json).
"""
import os

from relay.config import load_env_file
from relay.observability import gunicorn_logconfig, log_format

load_env_file()  # .env first, as every Relay process reads it: PORT, WEB_CONCURRENCY and the rest

bind = f"0.0.0.0:{os.environ.get('PORT') or 8000}"
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
threads = int(os.environ.get("WEB_THREADS") or 1)
timeout = 30
graceful_timeout = 25
keepalive = 5
accesslog = "-"
errorlog = "-"
logconfig_dict = gunicorn_logconfig(log_format(os.environ))
