"""Labelled query files (CSV ``text,label``) for ``cache eval`` and ``cache calibrate``."""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.datasets import LabelledQuery
from pipeline.errors import ConfigurationError

#: banking77's own CSV names the label column ``category``; both are accepted.
LABEL_COLUMNS = ("label", "category")


def read_labelled(path: Path, require_label: bool = True) -> list[LabelledQuery]:
    """Rows of a CSV with a ``text`` column and a ``label`` (or ``category``) column."""
    return [query for query, _ in read_labelled_rows(path, require_label)]


def read_labelled_rows(path: Path, require_label: bool = True) -> list[tuple[LabelledQuery, dict[str, str]]]:
    """Each row as a labelled query and the raw row (for optional columns such as ``answer``)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if "text" not in columns:
                raise ConfigurationError(f"{path}: no 'text' column (columns: {', '.join(columns) or 'none'})")
            label_column = next((c for c in LABEL_COLUMNS if c in columns), None)
            if label_column is None and require_label:
                raise ConfigurationError(f"{path}: no 'label' column (columns: {', '.join(columns)})")
            rows = []
            for line, row in enumerate(reader, start=2):
                text = (row.get("text") or "").strip()
                label = (row.get(label_column) or "").strip() if label_column else ""
                if not text or (require_label and not label):
                    raise ConfigurationError(f"{path}:{line}: empty text or label")
                rows.append((LabelledQuery(text, label), {k: v or "" for k, v in row.items() if k}))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    if not rows:
        raise ConfigurationError(f"{path}: no rows")
    return rows
