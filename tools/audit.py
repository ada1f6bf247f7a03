"""Audit the pinned requirements for known vulnerabilities (`make audit`, part of `make lint`).

pip-audit does the work: every pin of the requirement files (all exact pins, so `--no-deps
--disable-pip`: nothing is resolved or installed) is looked up in PyPI's vulnerability data (the
PyPA advisory database, served by PyPI's JSON API; PyPI is the one host a build machine must reach
anyway, while api.osv.dev may be blocked). pip-audit *skips*, and passes, a pin it cannot look up;
this script does not: a skipped pin is looked up again in the project's JSON document, whose
vulnerabilities are those of its latest release (exact when the pin is that release; some PyPI
mirrors serve only that document). A pin that still cannot be audited (an older release on such a
mirror, e.g. because the latest needs a newer Python) is named in a warning; if more than
MAX_UNAUDITED of the pins are, the audit means nothing and fails.

Exit status 0: no known vulnerability; 1: a vulnerable pin, or too few pins audited. Without PyPI
the audit cannot run: that fails under CI (CI=true) and is a warning elsewhere (`make lint` offline).

    .venv/bin/python tools/audit.py [requirements files...]   # default: requirements.txt requirements-dev.txt
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYPI = "https://pypi.org"
DEFAULT_FILES = ("requirements.txt", "requirements-dev.txt")
TIMEOUT = 15
# Share of pins that may go unaudited (see above) before the audit fails.
MAX_UNAUDITED = 0.1


def pins(files: list[Path]) -> dict[str, str]:
    """name -> version of every `name==version` line, following `-r` includes."""
    found: dict[str, str] = {}
    for path in files:
        for raw in path.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            if line.startswith(("-r ", "--requirement ")):
                found.update(pins([path.parent / line.split(maxsplit=1)[1]]))
            elif "==" in line:
                name, version = (part.strip() for part in line.split("==", 1))
                found[canonical(name)] = version.split(";", 1)[0].strip()
    return found


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen(f"{PYPI}/simple/", timeout=TIMEOUT) as resp:  # noqa: S310 - fixed https URL
            return bool(resp.status == 200)
    except OSError:
        return False


def run_pip_audit(files: list[Path]) -> dict[str, Any]:
    """pip-audit's JSON report over `files` (PyPI service, per-release data)."""
    command = [str(Path(sys.executable).parent / "pip-audit"), "--no-deps", "--disable-pip"]
    command += ["--vulnerability-service", "pypi", "--format", "json", "--progress-spinner", "off"]
    for path in files:
        command += ["--requirement", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603
    if not done.stdout.strip():
        sys.stderr.write(done.stderr)
        raise SystemExit(f"pip-audit failed (exit {done.returncode}) without a report")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def latest_release_vulns(name: str, version: str) -> list[dict[str, Any]] | None:
    """Vulnerabilities of `name==version` from the project document, or None if it does not say."""
    try:
        with urllib.request.urlopen(f"{PYPI}/pypi/{name}/json", timeout=TIMEOUT) as resp:  # noqa: S310 - fixed https URL
            document = json.load(resp)
    except (OSError, ValueError):
        return None
    if document.get("info", {}).get("version") != version:
        return None
    vulns: list[dict[str, Any]] = []
    seen: set[str] = set()
    for v in document.get("vulnerabilities") or []:
        aliases = v.get("aliases") or []
        if v.get("withdrawn") or v["id"] in seen:
            continue  # one advisory is often listed under each of its ids (PYSEC, GHSA)
        seen.update([v["id"], *aliases])
        vulns.append({"id": v["id"], "fix_versions": v.get("fixed_in") or [], "aliases": aliases})
    return vulns


def main(argv: list[str]) -> int:
    files = [Path(arg) for arg in argv] or [ROOT / name for name in DEFAULT_FILES]
    if not pypi_reachable():
        message = f"audit: {PYPI} is unreachable; dependencies NOT audited"
        if os.environ.get("CI", "").lower() in ("1", "true"):
            print(message, file=sys.stderr)
            return 1
        print(f"WARNING: {message} (this fails under CI=true)", file=sys.stderr)
        return 0
    pinned = pins(files)
    report = run_pip_audit(files)
    vulnerable: dict[str, list[dict[str, Any]]] = {}
    unauditable: list[str] = []
    audited = 0
    deps = [
        (canonical(d["name"]), d.get("version") or pinned.get(canonical(d["name"]), "?"), d)
        for d in report["dependencies"]
    ]
    skipped = [(name, version) for name, version, dep in deps if "skip_reason" in dep]
    with ThreadPoolExecutor(max_workers=8) as pool:
        fallback = dict(zip(skipped, pool.map(lambda nv: latest_release_vulns(*nv), skipped), strict=True))
    for name, version, dep in deps:
        vulns = fallback[(name, version)] if "skip_reason" in dep else dep.get("vulns")
        if vulns is None:
            unauditable.append(f"{name}=={version}")
            continue
        audited += 1
        if vulns:
            vulnerable[f"{name}=={version}"] = vulns
    for pin, vulns in sorted(vulnerable.items()):
        for vuln in vulns:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed release"
            aliases = ", ".join(vuln.get("aliases") or [])
            print(f"VULNERABLE {pin}: {vuln['id']} ({aliases}) fixed in: {fixed}")
    for pin in sorted(unauditable):
        print(f"WARNING: {pin} not audited: PyPI serves no vulnerability data for this release here")
    print(f"audit: {audited} pins audited, {len(vulnerable)} vulnerable, {len(unauditable)} not audited")
    if len(unauditable) > MAX_UNAUDITED * (audited + len(unauditable)):
        print(f"audit: more than {MAX_UNAUDITED:.0%} of the pins could not be audited", file=sys.stderr)
        return 1
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
