"""Reviewer credentials: who approved (or requested) a run, checked rather than typed.

The open-source Prefect server has no user accounts, so the Resume form's ``reviewer`` field
is free text. ``fairloop reviewers add NAME`` issues a random token (shown once) and stores
only its salted scrypt hash in the registry (``reviewers.json``, committed like everything
else there). Once any reviewer is registered, a review counts only if its ``token`` matches the
named reviewer's hash; anything else is refused and logged and the run keeps waiting.
A requester who passes their token to ``fairloop remediate`` is recorded the same way, and
separation of duties then compares two verified names.

What this does not protect against (see README): someone who can write the registry (they
can replace the hashes), someone who holds another reviewer's token, and anyone who can read
the Prefect API while a submitted form is stored there (the flow deletes each response as
soon as it has read it; put the API behind PREFECT_SERVER_API_AUTH_STRING).
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

from fairloop.errors import BadInputError
from fairloop.person_names import name_key

REVIEWERS_FILE = "reviewers.json"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# scrypt cost: ~50 ms per check here, so guessing a 192-bit token is hopeless anyway and a
# stolen reviewers.json does not hand out tokens cheaply.
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class Credential(BaseModel):
    name: str
    salt: str
    scrypt_hash: str
    added_at: str
    added_by: str


class ReviewerBook(BaseModel):
    reviewers: dict[str, Credential] = {}  # keyed by person_names.name_key of the name


def _hash(token: str, salt: bytes) -> str:
    return hashlib.scrypt(token.encode(), salt=salt, **SCRYPT).hex()


def read_book(registry_root: Path) -> ReviewerBook:
    path = Path(registry_root) / REVIEWERS_FILE
    return ReviewerBook.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else ReviewerBook()


def credentials_required(registry_root: Path) -> bool:
    """Reviews need a token once any reviewer is registered."""
    return bool(read_book(registry_root).reviewers)


def issue(book: ReviewerBook, name: str, rotate: bool = False) -> tuple[ReviewerBook, str]:
    """A new token for ``name`` and the book holding its hash (the token itself is not kept)."""
    if not NAME_PATTERN.fullmatch(name):
        raise BadInputError(f"reviewer name '{name}' must be 1-64 letters, digits, '-' or '_', starting with a letter or digit",
                            field="NAME")
    key = name_key(name)
    if key in book.reviewers and not rotate:
        raise BadInputError(f"reviewer '{book.reviewers[key].name}' already has a token; --rotate replaces it", field="NAME")
    token = f"{name}.{secrets.token_urlsafe(24)}"
    salt = secrets.token_bytes(16)
    credential = Credential(name=name, salt=salt.hex(), scrypt_hash=_hash(token, salt),
                            added_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), added_by=getpass.getuser())
    return book.model_copy(update={"reviewers": {**book.reviewers, key: credential}}), token


def token_matches(book: ReviewerBook, name: str, token: str) -> bool:
    credential = book.reviewers.get(name_key(name))
    if credential is None or not token:
        return False
    return hmac.compare_digest(_hash(token, bytes.fromhex(credential.salt)), credential.scrypt_hash)


def refusal(book: ReviewerBook, name: str, token: str) -> str | None:
    """Why the credential given with a review of ``name`` is not accepted (None: it is, or none is required)."""
    if not book.reviewers:
        return None
    if name_key(name) not in book.reviewers:
        return f"'{name}' has no reviewer credential (fairloop reviewers add NAME)"
    if not token:
        return f"no token given for '{name}': reviews need the reviewer's token"
    if not token_matches(book, name, token):
        return f"the token does not match reviewer '{name}'"
    return None


def identify(book: ReviewerBook, token: str) -> str:
    """The registered name a token belongs to (tokens start with their reviewer's name)."""
    name = token.split(".", 1)[0]
    if not token_matches(book, name, token):
        raise BadInputError("the token matches no registered reviewer", field="--token")
    return book.reviewers[name_key(name)].name
