"""Offline CLIP tokenizer: transformers' `CLIPTokenizer` built from the byte-pair vocabulary that ships with open_clip.

CLIP's byte-pair encoding (vocabulary 49408, start token 49406, end token 49407) is the same for every CLIP
checkpoint, so tokenized prompts work with transformers' and open_clip's text towers alike. open_clip ships the merge
list (``bpe_simple_vocab_16e6.txt.gz``) inside its wheel; the vocabulary is rebuilt from it the way CLIP defines it
(the 256 byte symbols, the same with the end-of-word marker ``</w>``, one entry per merge, then the start and end
tokens), so nothing is downloaded and the open_clip package itself is never imported (only its file is read).

`FacetVLMProcessor.tokenizer` is this tokenizer; `FacetVLMConfig` uses `clip_token_ids` to fill its
``prompt_input_ids``. A sibling of the model files (Hub remote code); it imports only torch and transformers.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

START_TOKEN_ID = 49406
END_TOKEN_ID = 49407
CONTEXT_LENGTH = 77
#: The merges CLIP uses: the first 49152 - 256 - 2 lines after the header of open_clip's merge list.
NUM_MERGES = 49152 - 256 - 2
VOCABULARY_FILE = "bpe_simple_vocab_16e6.txt.gz"


def vocabulary_file() -> Path | None:
    """open_clip's merge list, found without importing open_clip; None when open_clip is not installed."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / VOCABULARY_FILE
        if path.is_file():
            return path
    return None


def vocabulary_available() -> bool:
    """Whether the offline tokenizer can be built here."""
    return vocabulary_file() is not None


def _byte_symbols() -> list[str]:
    """CLIP's (and GPT-2's) printable stand-in of each of the 256 bytes, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[byte] for byte in range(256)]


@lru_cache(maxsize=1)
def offline_clip_tokenizer() -> Any:
    """transformers' `CLIPTokenizer` with CLIP's vocabulary, built from open_clip's merge list (cached)."""
    from transformers import CLIPTokenizer

    path = vocabulary_file()
    if path is None:
        raise ImportError("the offline CLIP tokenizer reads open_clip's vocabulary file: pip install open_clip_torch")
    lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")[1 : NUM_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = _byte_symbols()
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(merge) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={token: index for index, token in enumerate(tokens)}, merges=merges)


def clip_token_ids(texts: list[str] | tuple[str, ...] | str, context_length: int = CONTEXT_LENGTH) -> list[list[int]]:
    """Token ids of every text with start and end tokens, unpadded, truncated to `context_length` (end kept)."""
    if isinstance(texts, str):
        texts = [texts]
    result = []
    for ids in offline_clip_tokenizer()(list(texts), add_special_tokens=True)["input_ids"]:
        if len(ids) > context_length:
            ids = ids[: context_length - 1] + [END_TOKEN_ID]
        result.append(list(ids))
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


__all__ = ["CONTEXT_LENGTH", "END_TOKEN_ID", "START_TOKEN_ID", "clip_token_ids", "clip_tokenize",
           "offline_clip_tokenizer", "vocabulary_available"]
