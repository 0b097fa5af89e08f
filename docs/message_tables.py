#!/usr/bin/env python3
"""Writes the message tables of docs/protocol.md (every message type, who sends it, what answers it, and
each body's fields) from the records of daemon/wire/messages.py.  ``--check`` changes nothing and exits 1 when
the tables differ from the records (tests/test_protocol.py runs it).

    python docs/message_tables.py [--check]
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "docs"))

from settings_tables import between_markers  # noqa: E402  (docs/settings_tables.py)

from daemon.wire.messages import MESSAGES, Empty, MessageKind, Origin  # noqa: E402

DOC = REPO_ROOT / "docs" / "protocol.md"
BEGIN = "<!-- message tables: made by docs/message_tables.py from daemon/wire/messages.py; do not edit -->"
END = "<!-- end of message tables -->"


def public_fields(record: type) -> list[dataclasses.Field]:
    """The body's fields as the public schema has them: not the test-only ones, nor those not on the wire."""
    return [item for item in dataclasses.fields(record)
            if item.metadata.get("wire", True) and not item.metadata.get("test_only")]


def field_names(record: type) -> list[str]:
    names = []
    for item in public_fields(record):
        if item.metadata.get("flatten"):
            names += field_names(_record_of(item))
        else:
            names.append(item.name)
    return names


_WIRE_WORDS = {"int": "integer", "float": "number", "str": "string", "bool": "boolean", "ErrorCode": "string",
               "ImageSpec": "map", "dict": "map", "list": "list", "tuple": "list"}


def wire_type_of(annotation: str) -> str:
    """How a record's field type reads on the wire: ``str | None`` → ``string or null``."""
    parts = [part.strip() for part in re.split(r"\|(?![^\[]*\])", annotation)]  # not within brackets
    kinds = [_WIRE_WORDS.get(part.split("[", 1)[0], part) for part in parts if part != "None"]
    return " or ".join(kinds) + (" or null" if "None" in parts else "")


def _record_of(item: dataclasses.Field) -> type:
    return next(kind.record for kind in MESSAGES.values() if kind.record.__name__ == item.type)


def _summary(kinds: list[MessageKind], heading: str) -> str:
    rows = [f"| type | body | {heading} |", "| --- | --- | --- |"]
    for kind in kinds:
        body = "`{}`" if kind.record is Empty else f"[{kind.record.__name__}](#{kind.record.__name__.lower()})"
        rows.append(f"| `{kind.type.value}` | {body} | {_cell(kind.answer)} |")
    return "\n".join(rows)


def _fields(record: type) -> str:
    rows = [f"#### {record.__name__}", "", (record.__doc__ or "").strip().splitlines()[0], "",
            "| field | type | meaning |", "| --- | --- | --- |"]
    for item in public_fields(record):
        if item.metadata.get("flatten"):
            inner = _record_of(item)
            rows.append(f"| all of [{inner.__name__}](#{inner.__name__.lower()})'s | | {_cell(item.metadata['doc'])} |")
            continue
        optional = " (optional)" if item.metadata.get("optional") else ""
        wire_type = item.metadata.get("wire_type") or wire_type_of(str(item.type))
        rows.append(f"| `{item.name}` | {_cell(wire_type)}{optional} | {_cell(item.metadata.get('doc', ''))} |")
    return "\n".join(rows)


def tables() -> str:
    kinds = list(MESSAGES.values())
    requests = [kind for kind in kinds if kind.sender is Origin.CLIENT]
    replies = [kind for kind in kinds if kind.sender is Origin.DAEMON]
    records = []
    for kind in requests + replies:
        if kind.record is not Empty and kind.record not in records:
            records.append(kind.record)
    parts = ["Client → daemon:", "", _summary(requests, "answer"), "", "Daemon → client:", "",
             _summary(replies, "sent"), "", "### Bodies", ""]
    parts += ["\n\n".join(_fields(record) for record in records)]
    return "\n".join(parts)


def with_tables(text: str, generated: str) -> str:
    return between_markers(text, BEGIN, END, generated, f"{DOC} (message tables)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the tables are up to date")
    args = parser.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    wanted = with_tables(text, tables())
    if wanted == text:
        return 0
    if args.check:
        print("message tables out of date in docs/protocol.md: run python docs/message_tables.py", file=sys.stderr)
        return 1
    DOC.write_text(wanted, encoding="utf-8")
    return 0


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


if __name__ == "__main__":
    sys.exit(main())
