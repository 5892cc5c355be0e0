"""Avro schemas of every ticketflow event, as versioned ``.avsc`` data.

Files are named ``<event>.v<N>.avsc``. A new version must stay backward compatible with
the previous one (readers of the new schema read data written with the old one); the
contract tests in ``tests/unit/test_schemas.py`` enforce it.
"""

from __future__ import annotations

from pathlib import Path

AVRO_DIR = Path(__file__).resolve().parent / "avro"


def schema_files() -> list[Path]:
    """Every ``.avsc`` file, sorted by event then version."""
    return sorted(AVRO_DIR.glob("*.v*.avsc"), key=lambda p: (p.name.split(".v")[0], _version(p)))


def _version(path: Path) -> int:
    return int(path.name.split(".v")[1].removesuffix(".avsc"))


def version_of(path: Path) -> int:
    """The version number in a schema file name."""
    return _version(path)
