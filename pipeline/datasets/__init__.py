"""Bundled data: the banking77 train split (Casanueva et al. 2020, CC BY 4.0).

10,003 real online-banking support queries labelled with 77 intents, from the
PolyAI-LDN/task-specific-datasets repository (``banking_data/train.csv``), redistributed
under the Creative Commons Attribution 4.0 licence in ``banking77_LICENSE``. Cite:
Casanueva, Temcinas, Gerz, Henderson, Vulic. "Efficient Intent Detection with Dual
Sentence Encoders". Proceedings of the 2nd Workshop on NLP for ConvAI, ACL 2020.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

BANKING77_TRAIN = Path(__file__).resolve().parent / "banking77_train.csv"


@dataclass(frozen=True)
class LabelledQuery:
    text: str
    label: str


def banking77() -> list[LabelledQuery]:
    """Every row of the banking77 train split, in file order."""
    with BANKING77_TRAIN.open(encoding="utf-8", newline="") as handle:
        return [LabelledQuery(row["text"], row["category"]) for row in csv.DictReader(handle)]


def banking77_sample(n: int, seed: int = 7, rows: list[LabelledQuery] | None = None) -> list[LabelledQuery]:
    """A seeded sample of ``n`` queries of ``rows`` (default: the whole split), with repeats
    when ``n`` exceeds them."""
    rows = rows if rows is not None else banking77()
    rng = random.Random(seed)
    if n <= len(rows):
        return rng.sample(rows, n)
    return [rng.choice(rows) for _ in range(n)]


def banking77_split(holdout_share: float = 0.2, seed: int = 7) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """The train split cut in two, per intent: (tune, holdout).

    Cache and router parameters are tuned on ``tune`` only; ``holdout`` checks them.
    """
    return split_by_label(banking77(), holdout_share, seed)


def split_by_label(rows: list[LabelledQuery], share: float,
                   seed: int) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """``rows`` cut in two per label, ``share`` of each label in the second part; both shuffled."""
    by_label: dict[str, list[LabelledQuery]] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    rng = random.Random(seed)
    first: list[LabelledQuery] = []
    second: list[LabelledQuery] = []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        cut = round(len(group) * share)
        second.extend(group[:cut])
        first.extend(group[cut:])
    rng.shuffle(first)
    rng.shuffle(second)
    return first, second
