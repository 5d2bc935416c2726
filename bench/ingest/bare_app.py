"""The reference for bench/ingest.py: a bare Flask app that answers a webhook 200 and does
nothing else, served by the same gunicorn settings as Relay."""
from flask import Flask

app = Flask(__name__)


@app.post("/webhooks/sparkloop")
def webhook():
    return "", 200
