"""Offline CLIP tokenizer: open_clip's byte-pair encoder and the vocabulary file it ships with.

The ids are those of every CLIP checkpoint (vocabulary 49408, start 49406, end 49407), so tokenized prompts work
with transformers' and open_clip's text towers alike, and no download is needed.
"""

from __future__ import annotations

from functools import lru_cache

import torch

START_TOKEN_ID = 49406
END_TOKEN_ID = 49407
CONTEXT_LENGTH = 77


@lru_cache(maxsize=1)
def _bpe():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def clip_token_ids(texts: list[str] | tuple[str, ...], context_length: int = CONTEXT_LENGTH) -> list[list[int]]:
    """Token ids of every text with start and end tokens, unpadded, truncated to `context_length` (end kept)."""
    if isinstance(texts, str):
        texts = [texts]
    bpe = _bpe()
    result = []
    for text in texts:
        ids = [START_TOKEN_ID, *bpe.encode(text), END_TOKEN_ID]
        if len(ids) > context_length:
            ids = ids[: context_length - 1] + [END_TOKEN_ID]
        result.append(ids)
    return result


def clip_tokenize(
    texts: list[str] | tuple[str, ...], context_length: int = CONTEXT_LENGTH, padding: str = "longest"
) -> dict[str, torch.Tensor]:
    """`{"input_ids", "attention_mask"}` int64 tensors (N, L) padded with 0 to the longest text, or to
    `context_length` with `padding="max_length"` (CLIP's text tower pools at the end token, so padding is inert)."""
    if padding not in ("longest", "max_length"):
        raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
    ids = clip_token_ids(texts, context_length)
    length = context_length if padding == "max_length" else max((len(x) for x in ids), default=1)
    input_ids = torch.zeros(len(ids), length, dtype=torch.long)
    attention_mask = torch.zeros(len(ids), length, dtype=torch.long)
    for row, tokens in enumerate(ids):
        input_ids[row, : len(tokens)] = torch.tensor(tokens)
        attention_mask[row, : len(tokens)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
