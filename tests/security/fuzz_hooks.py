"""Schemathesis hooks for tests/security/test_fuzzing.py (loaded through SCHEMATHESIS_HOOKS).

A successful password change revokes every token issued before it (service/security/auth.py), the fuzzer's
own included: from then on every protected operation would answer 401 and the authenticated run
would test nothing. So a schema-valid new password is taken out of `PUT /api/user` bodies before
they are sent; schemathesis re-validates the edited case, and invalid passwords (too short, too
long, NUL, not a string) are still sent and must still be refused. Password changes themselves are
covered by tests/integration/test_accounts.py.

Likewise a well-formed `Idempotency-Key` is made unique per case: the fuzzer reuses short keys such
as "0" across cases, and a replay answers with the first case's stored result (by design), which
the stateful phase then follows to an article that a later case deleted. Malformed keys are still
sent as generated and must still be refused; replays are covered by
tests/integration/test_idempotency.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import schemathesis


def _valid_password(value: Any) -> bool:
    return isinstance(value, str) and 8 <= len(value) <= 256 and "\x00" not in value


def _valid_key(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 255 and all("!" <= c <= "~" for c in value)


def _unique_keys(case: Any) -> None:
    # A coverage case that leaves a header out is left alone: editing a case makes schemathesis
    # rebuild its request, which would put a left-out Authorization back.
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    if "MISSING" in str(getattr(data, "scenario", "")).upper():
        return
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key" and _valid_key(headers[name]):
            headers[name] = f"fuzz-{uuid.uuid4().hex}"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    _unique_keys(case)
    if case.method.upper() != "PUT" or case.path != "/api/user" or not isinstance(case.body, dict):
        return
    user = case.body.get("user")
    if isinstance(user, dict) and _valid_password(user.get("password")):
        del user["password"]
