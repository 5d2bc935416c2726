"""The console's accounts: who may sign in, as a viewer (sees, masked) or an operator (also acts).

Passwords are hashed with scrypt, a memory-hard function, by werkzeug.security (Flask's own
dependency: no new one), and never logged, printed or stored in the clear. Each change is
audited (operations.audit) under the account's email: an operator's address, not a subscriber's.
A change of password or role raises the account's `session_version`, and removing it deletes
its row: either way the console's sessions signed in before end (`signed_in`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import sqlalchemy as sa
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from operations import audit
from operations.audit import Actor
from relay.models import Account
from relay.runtime import Runtime

VIEWER, OPERATOR = "viewer", "operator"
ROLES = (VIEWER, OPERATOR)
MIN_PASSWORD_LENGTH = 8  # NIST SP 800-63B's floor for a chosen password
MAX_PASSWORD_LENGTH = 1024  # hashing is slow on purpose: no megabyte passwords
_EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class AccountError(ValueError):
    """Bad input or a refused change; the message names the problem (never a password)."""


@dataclass(frozen=True)
class AccountView:
    id: int
    email: str
    role: str
    session_version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, account: Account) -> AccountView:
        return cls(
            account.id,
            account.email,
            account.role,
            account.session_version,
            account.created_at,
            account.updated_at,
        )

    def as_dict(self) -> dict:
        return {
            "email": self.email,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def normal_email(text: str) -> str:
    """The email as accounts store it (trimmed, lowercase); AccountError when it is not one."""
    email = (text or "").strip().lower()
    if not _EMAIL_SHAPE.match(email) or len(email) > 254:
        raise AccountError("malformed email: one @, a domain with a dot, no spaces, at most 254 characters")
    return email


def checked_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: choose {' or '.join(ROLES)}")
    return role


def checked_password(password: str) -> str:
    if not password:
        raise AccountError("empty password")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"password too long: at most {MAX_PASSWORD_LENGTH} characters")
    return password


def _hashed(password: str) -> str:
    return generate_password_hash(checked_password(password), method="scrypt")


def list_accounts(runtime: Runtime) -> list[AccountView]:
    with runtime.session() as session:
        return [AccountView.of(a) for a in session.scalars(sa.select(Account).order_by(Account.email))]


def find_account(runtime: Runtime, email: str) -> AccountView | None:
    """The account with this email (any case), or None (also for text that is no email)."""
    try:
        email = normal_email(email)
    except AccountError:
        return None
    with runtime.session() as session:
        account = _find(session, email)
        return AccountView.of(account) if account is not None else None


def add_account(runtime: Runtime, email: str, role: str, password: str, *, actor: Actor) -> AccountView:
    """A new account; AccountError (recorded as refused) when one has this email already."""
    email, role, hashed = normal_email(email), checked_role(role), _hashed(password)
    with audit.audited(runtime, actor, "users.add", account=email) as entry, runtime.session() as session:
        entry.details["role"] = role
        if _find(session, email) is not None:
            entry.refused("existing account")
            raise AccountError(f"an account for {email} exists already")
        account = Account(email=email, role=role, password_hash=hashed)
        session.add(account)
        session.commit()
        return AccountView.of(account)


def remove_account(runtime: Runtime, email: str, *, actor: Actor) -> None:
    """Delete the account (its sessions end: none finds its row)."""
    email = normal_email(email)
    with audit.audited(runtime, actor, "users.remove", account=email) as entry, runtime.session() as session:
        account = _existing(session, email, entry)
        entry.details["role"] = account.role
        session.delete(account)
        session.commit()


def set_password(runtime: Runtime, email: str, password: str, *, actor: Actor) -> None:
    email, hashed = normal_email(email), _hashed(password)
    with audit.audited(runtime, actor, "users.set-password", account=email) as entry, runtime.session() as session:
        account = _existing(session, email, entry)
        account.password_hash = hashed
        account.session_version += 1
        session.commit()


def set_role(runtime: Runtime, email: str, role: str, *, actor: Actor) -> AccountView:
    email, role = normal_email(email), checked_role(role)
    with audit.audited(runtime, actor, "users.set-role", account=email) as entry, runtime.session() as session:
        account = _existing(session, email, entry)
        entry.details |= {"role": role, "was": account.role}
        if account.role != role:
            account.role = role
            account.session_version += 1
        session.commit()
        return AccountView.of(account)


def authenticate(runtime: Runtime, email: str, password: str) -> AccountView | None:
    """The account these credentials sign in to, or None (whichever was wrong, in the same time)."""
    try:
        email = normal_email(email)
    except AccountError:
        email = ""
    with runtime.session() as session:
        account = _find(session, email) if email else None
        hashed = account.password_hash if account is not None else _nobody()
        matches = check_password_hash(hashed, password or "")
        return AccountView.of(account) if account is not None and matches else None


def signed_in(runtime: Runtime, account_id: int, session_version: int) -> AccountView | None:
    """The account a console session signed in to, if the session is still good: the account is
    there and neither its password nor its role changed since (same `session_version`)."""
    with runtime.session() as session:
        account = session.get(Account, account_id)
        if account is None or account.session_version != session_version:
            return None
        return AccountView.of(account)


@cache
def _nobody() -> str:
    """Checked against when the email has no account, so a wrong email takes as long as a wrong
    password (made on first use: hashing takes a tenth of a second)."""
    return generate_password_hash("no account has this password", method="scrypt")


def _find(session: Session, email: str) -> Account | None:
    return session.scalar(sa.select(Account).where(Account.email == email))


def _existing(session: Session, email: str, entry: audit.Draft) -> Account:
    account = _find(session, email)
    if account is None:
        entry.refused("unknown account")
        raise AccountError(f"no account for {email}")
    return account
