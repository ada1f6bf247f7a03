"""Write the service's OpenAPI document, as /api/openapi.json serves it, for linters and generators.

The document is built from the routes' declarations alone: an in-memory SQLite app is enough, and
no server, database or Redis is needed (the SQLite file is a throwaway).

    .venv/bin/python tools/openapi_dump.py var/openapi.json   # or - for stdout
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service import create_app  # noqa: E402 - after the path is set
from service.api.openapi import build_document  # noqa: E402


def main(argv: list[str]) -> int:
    target = argv[0] if argv else "-"
    with tempfile.TemporaryDirectory() as tmp:  # the app opens its database file; nothing is written to it
        app = create_app({"DATABASE_URL": f"sqlite:///{tmp}/openapi.db"}, env={"APP_ENV": "testing"})
        document = orjson.dumps(build_document(app), option=orjson.OPT_INDENT_2) + b"\n"
    if target == "-":
        sys.stdout.buffer.write(document)
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_bytes(document)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
