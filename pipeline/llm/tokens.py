"""Token counts from a real tokenizer that ships with the package (no download).

The bundled all-MiniLM-L6-v2 WordPiece tokenizer: not the provider's own BPE, but a real
subword tokenizer whose counts track a provider's within a few tens of percent on English
support text; real providers report their own counts, which the agent uses instead.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from tokenizers import Tokenizer

    from pipeline.cache.embedder import bundled_model_path

    tokenizer = Tokenizer.from_file(str(bundled_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


@functools.lru_cache(maxsize=8192)
def count_tokens(text: str) -> int:
    """Tokens in ``text`` (memoised: system prompts and tool schemas repeat on every call)."""
    if not text:
        return 0
    return len(_tokenizer().encode(text, add_special_tokens=False).ids)
