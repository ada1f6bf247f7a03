"""Schemathesis hooks for tests/security/test_fuzzing.py (loaded through SCHEMATHESIS_HOOKS).

A successful password change revokes every token issued before it (service/auth.py), the fuzzer's
own included: from then on every protected operation would answer 401 and the authenticated run
would test nothing. So a schema-valid new password is taken out of `PUT /api/user` bodies before
they are sent; schemathesis re-validates the edited case, and invalid passwords (too short, too
long, NUL, not a string) are still sent and must still be refused. Password changes themselves are
covered by tests/integration/test_accounts.py.
"""

from __future__ import annotations

from typing import Any

import schemathesis


def _valid_password(value: Any) -> bool:
    return isinstance(value, str) and 8 <= len(value) <= 256 and "\x00" not in value


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() != "PUT" or case.path != "/api/user" or not isinstance(case.body, dict):
        return
    user = case.body.get("user")
    if isinstance(user, dict) and _valid_password(user.get("password")):
        del user["password"]
