"""The errors a store operation raises when the database is unreachable or not migrated, for
the interfaces to report as one line (the operation's own errors are its own)."""

from __future__ import annotations

from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError

STORE_UNAVAILABLE = (OperationalError, InterfaceError, ProgrammingError)
