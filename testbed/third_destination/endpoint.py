"""Ledger itself, for the tests: a small HTTP endpoint served on loopback that keeps records,
answers with its own rate headers and error shape, and can be told its next answers."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

TOKEN = "ledger-token"
LIMIT = 100


@dataclass
class Ledger:
    records: list[dict] = field(default_factory=list)
    calls: int = 0
    # Answers to give before any other: (status, body, headers).
    next_answers: list[tuple[int, dict, dict]] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    # The accounts it opened: one for each record that names none (as a vendor whose records
    # belong to an account its client must remember).
    accounts: list[str] = field(default_factory=list)
    url: str = ""

    def app(self) -> Flask:
        app = Flask("ledger")
        ids = itertools.count(1)

        def refused():
            if request.headers.get("Authorization") != f"Token {TOKEN}":
                return jsonify(problem={"code": "unauthorized", "detail": "unknown token"}), 401
            return None

        @app.post("/records")
        def records():
            self.calls += 1
            request_id = {"x-ledger-request": f"req-{self.calls}"}
            if (refusal := refused()) is not None:
                return refusal
            if self.next_answers:
                status, body, headers = self.next_answers.pop(0)
                return jsonify(body), status, {**request_id, **headers}
            key, body = request.headers["Idempotency-Key"], request.get_json()
            account = body.get("account")
            if account is None:
                account = f"acc_{len(self.accounts) + 1}"
                self.accounts.append(account)
            if key not in self.keys:
                self.keys.add(key)
                self.records.append(body | {"account": account})
            limits = {"x-ledger-limit": str(LIMIT), "x-ledger-remaining": str(LIMIT - len(self.records))}
            return jsonify(id=f"rec_{next(ids)}", account=account), 201, {**request_id, **limits}

        @app.post("/erasures")
        def erasures():
            if (refusal := refused()) is not None:
                return refusal
            gone = set(request.get_json()["emails"])
            self.records[:] = [record for record in self.records if record["email"] not in gone]
            return jsonify(request=f"del_{len(gone)}"), 202

        @app.get("/whoami")
        def whoami():
            return refused() or jsonify(account="acct_1")

        return app


class Served:
    """A Ledger on a free loopback port, in a thread of this process; stopped by `stop`."""

    def __init__(self):
        self.ledger = Ledger()
        self._server = make_server("127.0.0.1", 0, self.ledger.app(), threaded=True)
        self.ledger.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
