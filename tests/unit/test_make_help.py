"""`make help` lists every target of the Makefile.

Read from the Makefile's text (unit tests start no process): each target's line carries a `## `
description, which is what the help rule prints.
"""

from __future__ import annotations

import re
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"
# A named rule: `name: prerequisites`, not a variable (`:=`), a special target (`.PHONY`) or a file ($(VENV)/...).
TARGET = re.compile(r"^([a-zA-Z][a-zA-Z0-9_-]*):(?!=)(.*)$")
# The help rule's pattern, as the awk program in the Makefile matches lines.
HELP_LINE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]*:[^=]*## ")


def targets() -> dict[str, str]:
    found = {}
    for line in MAKEFILE.read_text().splitlines():
        match = TARGET.match(line)
        if match:
            found[match.group(1)] = line
    return found


def test_the_makefile_has_the_targets_this_test_expects_to_find():
    assert {"help", "run", "test", "lint", "bench", "tune", "cluster", "clean"} <= set(targets())


def test_every_target_has_a_help_line():
    undocumented = sorted(name for name, line in targets().items() if not HELP_LINE.match(line))
    assert not undocumented, f"add `## what it does` to these targets' lines in the Makefile: {undocumented}"


def test_help_prints_the_help_lines_and_is_the_default_goal():
    text = MAKEFILE.read_text()
    assert next(iter(targets())) == "help"
    recipe = text.split("\nhelp:", 1)[1].split("\n\n", 1)[0]
    assert "## " in recipe and "MAKEFILE_LIST" in recipe
