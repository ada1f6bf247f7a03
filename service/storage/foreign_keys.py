"""What a failed foreign key means to the client: which referenced row vanished.

Services look up what a write references before inserting it, so a foreign key that still fails
means a delete committed in between. The answer names what vanished: an article or a profile is
404, as if the lookup had missed it; only the token's own account is 401, because clients sign
their user out on 401.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, TextClause, text
from sqlalchemy.exc import IntegrityError

from service.api.errors import APIError, NotFound, Unauthorized, messages

ARTICLE_EXISTS = text("SELECT EXISTS (SELECT 1 FROM articles WHERE id = :id)")
USER_EXISTS = text("SELECT EXISTS (SELECT 1 FROM users WHERE id = :id)")

# SQLSTATE foreign_key_violation; psycopg2 gives it as `pgcode`.
PG_FOREIGN_KEY_VIOLATION = "23503"
# The extended result code Python's sqlite3 gives as `sqlite_errorname` (3.11+).
SQLITE_FOREIGN_KEY_VIOLATION = "SQLITE_CONSTRAINT_FOREIGNKEY"


@dataclass(frozen=True)
class Referent:
    """A kind of referenced row: the query that says whether one still exists, and what its absence answers."""

    exists: TextClause
    error: type[APIError]
    message: str

    def gone(self) -> APIError:
        return self.error(self.message)


ARTICLE = Referent(ARTICLE_EXISTS, NotFound, messages.ARTICLE_NOT_FOUND)
PROFILE = Referent(USER_EXISTS, NotFound, messages.PROFILE_NOT_FOUND)
ACCOUNT = Referent(USER_EXISTS, Unauthorized, messages.ACCOUNT_GONE)

REFERENTS = {"article": ARTICLE, "profile": PROFILE, "account": ACCOUNT}

# Every foreign key of the core schema, by the name PostgreSQL gave it: <table>_<column>_fkey, its
# default, as service/storage/migrations/postgresql/*.sql name none. A test checks none is missing.
# A domain's own tables pass theirs to `referencing` (`constraints=`), so this list stays as it is.
CONSTRAINTS: dict[str, Referent] = {
    "follows_follower_id_fkey": ACCOUNT,
    "follows_followee_id_fkey": PROFILE,
    "articles_author_id_fkey": ACCOUNT,
    "article_tags_article_id_fkey": ARTICLE,
    "favorites_user_id_fkey": ACCOUNT,
    "favorites_article_id_fkey": ARTICLE,
    "comments_article_id_fkey": ARTICLE,
    "comments_author_id_fkey": ACCOUNT,
}


@contextmanager
def referencing(conn: Connection, constraints: Mapping[str, Referent] | None = None, **ids: int) -> Iterator[None]:
    """Run a write on `conn` that references the rows named in `ids` (`article=`, `profile=`, `account=`).

    A foreign-key failure inside raises the error of the row that vanished: NotFound for an article
    or profile, Unauthorized for the account. Any other integrity error propagates unchanged.
    `constraints` names the foreign keys of the written table when they are not in CONSTRAINTS."""
    unknown = ids.keys() - REFERENTS.keys()
    if unknown:
        raise TypeError(f"unknown referents {sorted(unknown)}; expected some of {sorted(REFERENTS)}")
    try:
        yield
    except IntegrityError as err:
        referent = _vanished(conn, err, ids, {**CONSTRAINTS, **(constraints or {})})
        if referent is None:
            raise
        raise referent.gone() from err


def _vanished(
    conn: Connection, err: IntegrityError, ids: dict[str, int], constraints: Mapping[str, Referent]
) -> Referent | None:
    """The referent whose row is gone, when `err` is a foreign-key failure that can be placed; else None."""
    if getattr(err.orig, "pgcode", None) == PG_FOREIGN_KEY_VIOLATION:
        return constraints.get(getattr(getattr(err.orig, "diag", None), "constraint_name", None) or "")
    if getattr(err.orig, "sqlite_errorname", None) == SQLITE_FOREIGN_KEY_VIOLATION:
        return _missing(conn, ids)
    return None


def _missing(conn: Connection, ids: dict[str, int]) -> Referent | None:
    """The first of `ids` whose row no longer exists, asked in the failed write's own transaction.

    SQLite names no constraint ("FOREIGN KEY constraint failed"), so this asks which row is gone.
    The answer is exact, not a guess: SQLite undid only the failed statement, and the transaction
    began IMMEDIATE (service/storage/db.py), so it still holds the database's one write lock and no other
    connection can have deleted or re-inserted a row since the statement failed. (On PostgreSQL
    the failed statement aborts the transaction, so there the constraint name is used instead.)
    """
    for name, row_id in ids.items():
        referent = REFERENTS[name]
        if not conn.execute(referent.exists, {"id": row_id}).scalar_one():
            return referent
    return None
