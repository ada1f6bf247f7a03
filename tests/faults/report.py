"""Figures of fault runs: printed, and kept as JSON under var/faults/ for BENCHMARKS.md."""

from __future__ import annotations

import json
from typing import Any

from tests.live import ROOT


def record(name: str, values: dict[str, Any]) -> None:
    """Print and save the figures of one run (shown with `pytest -s`)."""
    folder = ROOT / "var" / "faults"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(values, indent=2) + "\n")
    print(f"\n[faults] {name}: {json.dumps(values)}")
