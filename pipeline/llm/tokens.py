"""Token counts from a real tokenizer that ships with the package (no download).

The bundled all-MiniLM-L6-v2 WordPiece tokenizer: not the provider's own BPE, but a real
subword tokenizer whose counts track a provider's within a few tens of percent on English
support text; real providers report their own counts, which the agent uses instead.

Counting runs on the agent's event loop and in the cache stage for every call and ticket,
and the tokenizer's ``encode`` holds the GIL (about 160 us for a 60-word text here: 5 % of
the worker's GIL time at 100 tickets/s). On printable ASCII text the count is the sum of
its whitespace-separated words' counts: the tokenizer's normaliser works character by
character (lower-casing; accents and CJK only outside ASCII), its pre-tokeniser splits at
whitespace first, and WordPiece then works within the pieces. Words repeat (support text
has a small vocabulary, a transcript resends its earlier messages), so each word is
encoded once; any other text (control characters, non-ASCII) is encoded whole.
"""

from __future__ import annotations

import functools
import re
from typing import Any

#: anything but printable ASCII, tab, newline and carriage return (the tokenizer removes
#: other control characters, where ``str.split`` would split at some of them)
_NOT_PLAIN = re.compile(r"[^\x20-\x7e\t\n\r]")


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from tokenizers import Tokenizer

    from pipeline.cache.embedder import bundled_model_path

    tokenizer = Tokenizer.from_file(str(bundled_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def encoded_tokens(text: str) -> int:
    """Tokens in ``text`` by encoding it whole (what :func:`count_tokens` equals)."""
    return len(_tokenizer().encode(text, add_special_tokens=False))


@functools.lru_cache(maxsize=65536)
def _word_tokens(word: str) -> int:
    return encoded_tokens(word)


@functools.lru_cache(maxsize=8192)
def _text_tokens(text: str) -> int:
    return encoded_tokens(text)


def count_tokens(text: str) -> int:
    """Tokens in ``text``: by word on printable ASCII (exactly the whole text's count, see
    the module's note), memoised whole otherwise (system prompts and tool schemas repeat)."""
    if not text:
        return 0
    if _NOT_PLAIN.search(text) is None:
        return sum(map(_word_tokens, text.split()))
    return _text_tokens(text)
