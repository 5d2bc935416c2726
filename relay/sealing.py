"""Personal data at rest: stored payloads and validation errors, sealed with RELAY_PAYLOAD_KEYS.

With keys set, `Event.payload` and `Event.errors` are stored as a small JSON envelope,
`{"sealed": "<Fernet token>", "key": "<key id>"}`, so the columns, their types and the
migrations stay as they were. Fernet (cryptography's MultiFernet) encrypts with the first key
and opens with any of them; the key id (a short hash of the key, never the key) says which key
sealed a row, so `relay keys rotate` skips rows already under the first key without opening
them, and `relay keys status` counts rows per key.

Transparent to the code: the columns' type (`SealedJSON`) seals on the way in and opens on the
way out, ORM and bulk `sa.update()` alike, so everything reads `event.payload` as a dict. A type
has no access to the Database, only to the dialect of the engine it runs on (one per engine), so
each Database hands its sealer to its engines' dialects (`attach`) and the type finds it there:
no module keeps a registry of sealers.

Without keys, values are stored as plain JSON exactly as before, and plain rows written before
keys were set read as they are: turning encryption on needs no migration, and `relay keys
rotate` seals the old rows. A plain value that would look like an envelope is stored wrapped
as `{"plain": value}`, so no payload can pass itself off as sealed.

A sealed row that no configured key opens raises SealedDataError, whose message names
RELAY_PAYLOAD_KEYS and the key id, and never any stored value.
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.dialects.postgresql import JSONB


class SealedDataError(RuntimeError):
    """A stored value cannot be opened with RELAY_PAYLOAD_KEYS. Names no stored value; `key_id`
    names the key that sealed it (an id, never the key)."""

    def __init__(self, message: str, key_id: str):
        super().__init__(message)
        self.key_id = key_id


def key_id(key: str) -> str:
    """A short, stable name for a key: enough to tell configured keys apart, nothing to open."""
    return hashlib.sha256(b"relay-payload-key:" + key.encode()).hexdigest()[:12]


def is_sealed(value) -> bool:
    return (
        isinstance(value, dict)
        and value.keys() == {"sealed", "key"}
        and isinstance(value["sealed"], str)
        and isinstance(value["key"], str)
    )


def _is_wrapped(value) -> bool:
    return isinstance(value, dict) and value.keys() == {"plain"}


class Sealer:
    """Seals JSON values with the first of `keys` and opens values sealed with any of them.
    With no keys it seals nothing and opens nothing sealed."""

    def __init__(self, keys: tuple[str, ...] = ()):
        self.keys = tuple(keys)
        self.key_ids = tuple(key_id(k) for k in self.keys)
        self._fernets = {kid: Fernet(k) for kid, k in zip(self.key_ids, self.keys, strict=True)}
        self._all = MultiFernet(list(self._fernets.values())) if self.keys else None

    @property
    def active(self) -> bool:
        return bool(self.keys)

    @property
    def current_key_id(self) -> str | None:
        return self.key_ids[0] if self.keys else None

    def seal(self, value):
        """What to store for `value`: an envelope with keys, the value itself without."""
        if value is None:
            return None
        if not self.active:
            return {"plain": value} if is_sealed(value) or _is_wrapped(value) else value
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return {"sealed": self._all.encrypt(text.encode()).decode(), "key": self.current_key_id}

    def open(self, stored):
        """The value `stored` holds: opened if sealed, unwrapped if wrapped, else as it is."""
        if _is_wrapped(stored):
            return stored["plain"]
        if not is_sealed(stored):
            return stored
        if not self.active:
            raise SealedDataError(
                f"a stored value is encrypted (key id {stored['key']}) and "
                "RELAY_PAYLOAD_KEYS is not set: set it to the keys in use",
                stored["key"],
            )
        # The key the id names; any configured key if the id is not known (MultiFernet).
        fernet = self._fernets.get(stored["key"], self._all)
        try:
            text = fernet.decrypt(stored["sealed"].encode())
        except InvalidToken:
            raise SealedDataError(
                f"a stored value was encrypted with a key RELAY_PAYLOAD_KEYS does not hold "
                f"(key id {stored['key']}): add that key back to RELAY_PAYLOAD_KEYS",
                stored["key"],
            ) from None
        return json.loads(text)

    def reseal(self, stored):
        """For `relay keys rotate`: the new stored form of `stored`, or None when it is
        already as it should be (sealed under the first key, or null)."""
        if stored is None or (is_sealed(stored) and stored["key"] == self.current_key_id):
            return None
        return self.seal(self.open(stored))


# --- the column type ------------------------------------------------------------------------

_PLAIN = Sealer()  # never changes: it has no keys
_ATTRIBUTE = "relay_sealer"


def attach(engine: sa.Engine, sealer: Sealer) -> None:
    """Make `sealer` seal and open the SealedJSON columns read and written through `engine`."""
    setattr(engine.dialect, _ATTRIBUTE, sealer)


def sealer_for(dialect) -> Sealer:
    """The sealer of the engine this dialect belongs to; a keyless one for any other engine."""
    return getattr(dialect, _ATTRIBUTE, _PLAIN)


class SealedJSON(sa.TypeDecorator):
    """JSON (JSONB on PostgreSQL), sealed at rest when the engine's Database has keys."""

    impl = sa.JSON
    cache_ok = True
    hashable = False
    # As JSON: None is stored as JSON null, as it always was.
    should_evaluate_none = True

    def load_dialect_impl(self, dialect):
        return dialect.type_descriptor(JSONB() if dialect.name == "postgresql" else sa.JSON())

    def process_bind_param(self, value, dialect):
        if value is sa.JSON.NULL:
            return value
        return sealer_for(dialect).seal(value)

    def process_result_value(self, value, dialect):
        return sealer_for(dialect).open(value)
