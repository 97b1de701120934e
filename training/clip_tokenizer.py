"""The CLIP BPE tokenizer(s) of SD1.5 / SDXL, built offline.

The vocab and merges come from (in order) an explicit ``tokenizer_dir``, ``$LORA_STUDIO_CLIP_TOKENIZER`` (the
studio sets it to ComfyUI's own ``comfy/sd1_tokenizer``), ComfyUI's ``comfy/sd1_tokenizer`` found relative to
``custom_nodes/<pack>/``, or are rebuilt exactly from the ``bpe_simple_vocab_16e6.txt.gz`` that the
``open_clip_torch`` wheel ships. SDXL's second tokenizer is the same vocab padding with "!" (id 0).

transformers is imported inside the functions that build tokenizers.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path

from .architecture import shipped_config
from .errors import TrainingError

log = logging.getLogger("lora_studio.training.clip_tokenizer")

TOKENIZER_ENV = "LORA_STUDIO_CLIP_TOKENIZER"
MAX_TOKENS = 77
CLIP_VOCAB_SIZE = 49408
CLIP_MERGES = 48894


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte-level alphabet, in vocab order: printable bytes first, the rest mapped above U+0100."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return list(table.values())


def open_clip_bpe_path() -> Path | None:
    """``bpe_simple_vocab_16e6.txt.gz`` from an installed open_clip_torch, found without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bpe_simple_vocab_16e6.txt.gz"
        if candidate.is_file():
            return candidate
    return None


def clip_vocab_from_bpe(bpe_path: Path) -> tuple[dict[str, int], list[str]]:
    """Rebuild CLIP's vocab (49,408 tokens) and merges (48,894) from open_clip's BPE merge list."""
    lines = gzip.open(bpe_path, "rt", encoding="utf-8").read().split("\n")
    # Line 0 is a version header; CLIP keeps the first 49152 - 256 - 2 merges.
    merges = lines[1 : 49152 - 256 - 2 + 1]
    alphabet = _bytes_to_unicode()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def comfyui_tokenizer_dir() -> Path | None:
    """``<ComfyUI>/comfy/sd1_tokenizer`` when this pack sits in ``<ComfyUI>/custom_nodes/<pack>/``."""
    pack = Path(__file__).resolve().parent.parent
    if pack.parent.name != "custom_nodes":
        return None
    candidate = pack.parent.parent / "comfy" / "sd1_tokenizer"
    return candidate if (candidate / "vocab.json").is_file() else None


def load_clip_vocab(tokenizer_dir: Path | str | None = None) -> tuple[dict[str, int], list[str], str]:
    """(vocab, merges, where-from) of the CLIP BPE tokenizer, from the first source that has it."""
    sources: list[tuple[str, Path]] = []
    if tokenizer_dir:
        sources.append(("tokenizer_dir", Path(tokenizer_dir)))
    elif os.environ.get(TOKENIZER_ENV):
        sources.append((TOKENIZER_ENV, Path(os.environ[TOKENIZER_ENV])))
    else:
        found = comfyui_tokenizer_dir()
        if found is not None:
            sources.append(("ComfyUI", found))
    for label, folder in sources:
        vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
        if not (vocab_file.is_file() and merges_file.is_file()):
            raise TrainingError(f"CLIP tokenizer folder {folder} ({label}) lacks vocab.json/merges.txt")
        vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
        lines = merges_file.read_text(encoding="utf-8").split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]  # header only: real merges may start with "#"
        merges = [line for line in lines if line.strip()]
        return vocab, merges, str(folder)
    bpe = open_clip_bpe_path()
    if bpe is None:
        raise TrainingError(
            "no CLIP tokenizer files found: pass tokenizer_dir, set "
            f"{TOKENIZER_ENV} to a folder with vocab.json + merges.txt (e.g. ComfyUI's comfy/sd1_tokenizer), "
            "or install the BPE file with: pip install --no-deps open_clip_torch"
        )
    vocab, merges = clip_vocab_from_bpe(bpe)
    return vocab, merges, str(bpe)


def build_clip_tokenizer(arch: str, vocab: dict[str, int], merges: list[str], *, second: bool = False):
    """A CLIPTokenizer (77 tokens) from vocab + merges; SDXL's second tokenizer pads with "!" (id 0)."""
    from transformers import CLIPTokenizer

    settings = shipped_config(arch, "tokenizer_2_config" if second else "tokenizer_config")
    max_length = settings.pop("model_max_length", MAX_TOKENS)
    pairs = [tuple(merge.split()) for merge in merges]
    tokenizer = CLIPTokenizer(vocab=dict(vocab), merges=pairs, **settings)
    tokenizer.model_max_length = max_length
    return tokenizer


def tokenizers_for(arch: str, tokenizer_dir) -> list:
    vocab, merges, origin = load_clip_vocab(tokenizer_dir)
    log.info("CLIP tokenizer from %s (%d tokens)", origin, len(vocab))
    tokenizers = [build_clip_tokenizer(arch, vocab, merges)]
    if arch == "sdxl":
        tokenizers.append(build_clip_tokenizer(arch, vocab, merges, second=True))
    return tokenizers


def tokenize(tokenizer, captions: list[str]):
    return tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids

