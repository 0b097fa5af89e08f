#!/usr/bin/env python3
"""Writes the settings tables of README.md (the command-line options) and docs/protocol.md (the settings
of a submit message) from the settings schema, nst_engine/settings.py.  ``--check`` changes nothing and
exits 1 when a table differs from the schema (tests/test_settings.py runs it).

    python docs/settings_tables.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from nst_engine.cli.setting_options import setting_options  # noqa: E402
from nst_engine.schema import FrontEnd, Kind  # noqa: E402
from nst_engine.settings import settings_for  # noqa: E402

BEGIN = "<!-- settings table: made by docs/settings_tables.py from nst_engine/settings.py; do not edit -->"
END = "<!-- end of settings table -->"
_WIRE_TYPES = {Kind.NUMBER: "number", Kind.INTEGER: "integer", Kind.FLAG: "boolean", Kind.CHOICE: "string",
               Kind.NUMBERS: "list of numbers or null", Kind.INTEGERS: "list of integers or null"}


def command_line_table() -> str:
    rows = ["| option | meaning | default |", "| --- | --- | --- |"]
    for option in setting_options():
        rows.append(f"| `{_cell(option.usage)}` | {_cell(option.help)} | {_cell(option.default or 'off')} |")
    return "\n".join(rows)


def wire_table() -> str:
    rows = ["| name | type | default | valid values | meaning |", "| --- | --- | --- | --- | --- |"]
    for item in settings_for(FrontEnd.WIRE):
        spec = item.spec
        default = f"`{json.dumps(item.plain_default())}`" + (f" ({spec.none_means})" if spec.none_means else "")
        meaning = spec.help + (f", in {spec.unit}" if spec.unit else "")
        valid = item.requirement() if item.kind is not Kind.CHOICE else \
            "; ".join(f"`{json.dumps(choice.value)}`: {choice.help}" for choice in spec.choices)
        rows.append(f"| `{item.name}` | {_WIRE_TYPES[item.kind]} | {_cell(default)} | {_cell(valid)} "
                    f"| {_cell(meaning)} |")
    return "\n".join(rows)


TABLES: dict[Path, Callable[[], str]] = {
    REPO_ROOT / "README.md": command_line_table,
    REPO_ROOT / "docs" / "protocol.md": wire_table,
}


def between_markers(text: str, begin: str, end: str, generated: str, where: str) -> str:
    """``text`` with the lines between the ``begin`` and ``end`` marker lines replaced by ``generated``."""
    try:
        head, rest = text.split(begin + "\n", 1)
        _, tail = rest.split(end, 1)
    except ValueError:
        raise SystemExit(f"{where}: the markers are missing") from None
    return f"{head}{begin}\n{generated}\n{end}{tail}"


def with_table(text: str, table: str, path: Path) -> str:
    """``text`` with the lines between the settings table's markers replaced by ``table``."""
    return between_markers(text, BEGIN, END, table, f"{path} (settings table)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the tables are up to date")
    args = parser.parse_args(argv)
    stale = []
    for path, make_table in TABLES.items():
        text = path.read_text(encoding="utf-8")
        wanted = with_table(text, make_table(), path)
        if wanted != text:
            stale.append(path.relative_to(REPO_ROOT))
            if not args.check:
                path.write_text(wanted, encoding="utf-8")
    if stale and args.check:
        print(f"settings tables out of date in {', '.join(map(str, stale))}: run python docs/settings_tables.py",
              file=sys.stderr)
        return 1
    return 0


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


if __name__ == "__main__":
    sys.exit(main())
