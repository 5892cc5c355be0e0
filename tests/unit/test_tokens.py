"""The token counter's word-by-word path gives the tokenizer's own count of the whole text."""

from __future__ import annotations

import json
import random

from pipeline.datasets import banking77_sample
from pipeline.llm.tokens import count_tokens, encoded_tokens


def _banking_texts() -> list[str]:
    return [q.text for q in banking77_sample(3000, seed=11)]


def test_word_by_word_equals_the_whole_text_count() -> None:
    rng = random.Random(5)
    texts = _banking_texts()
    samples = [
        *texts,
        json.dumps({"resolution_key": "card_arrival", "answer": "It's on its way (2-3 days)!", "confidence": 0.93}),
        "user: My card\tdidn't   arrive\nsystem: {\"customer_id\": \"C-00001\"} ... ok?!",
        "x" * 250 + " " + "supercalifragilisticexpialidocious" * 4,  # WordPiece's 100-character limit
        "",
        "   ",
    ]
    soup = "ab Zq9 .,;:!?'\"{}[]()-_/\\@#$%^&*+=<>~`|\t\n"
    for _ in range(300):  # random ASCII soup: punctuation, digits, runs of spaces
        samples.append("".join(rng.choice(soup) for _ in range(rng.randint(1, 80))))
    for text in samples:
        assert count_tokens(text) == encoded_tokens(text), repr(text)


def test_other_text_is_encoded_whole() -> None:
    for text in ("café crème brûlée", "a\x0bb\x1cc", "日本語のテキスト", "naïve\u00a0space", "tab\x7fdel"):
        assert count_tokens(text) == encoded_tokens(text), text
