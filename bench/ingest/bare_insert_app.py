"""The second reference for bench/ingest: the least any durable intake does. A bare Flask app
that parses the JSON and inserts it with a de-duplication key: one prepared statement, in
autocommit, with PostgreSQL's default commit (synchronous: on disk when it returns). Served by
the same gunicorn settings as Relay; BARE_DATABASE_URL names the database (a libpq URL) and
run.py makes its table, bare_events."""
import hashlib
import json
import os
from functools import cache

import psycopg
from flask import Flask, request
from psycopg.types.json import Jsonb

INSERT = "INSERT INTO bare_events (dedup_key, payload) VALUES (%s, %s) ON CONFLICT (dedup_key) DO NOTHING"

app = Flask(__name__)


@cache
def connection() -> psycopg.Connection:
    # One per gunicorn worker: opened on its first request, after the fork.
    return psycopg.connect(os.environ["BARE_DATABASE_URL"], autocommit=True)


@app.post("/webhooks/sparkloop")
def webhook():
    raw = request.get_data()
    payload = json.loads(raw)
    connection().execute(INSERT, (hashlib.sha256(raw).hexdigest(), Jsonb(payload)), prepare=True)
    return "", 200
