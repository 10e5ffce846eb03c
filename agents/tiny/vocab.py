"""Tokenizers for the tiny models (agents/tiny/pipelines.py, agents/tiny/judges.py), trained
offline on a small corpus written here.

Nothing is downloaded. The families are shaped like the real ones so the pipelines call them
exactly as they call real checkpoints:

* CLIP: byte-level BPE with ``</w>`` word ends, its merges learnt by the ``tokenizers``
  library's ``BpeTrainer``. Ids 0-255 are the 256 byte symbols, 256-511 the same symbols ending
  a word, then the learnt merges, and ``<|startoftext|>`` / ``<|endoftext|>`` as the two top ids
  (as in OpenAI's CLIP). Every byte has a symbol, so any text (unicode, emoji, empty)
  tokenizes without an unknown token.
* Qwen2 (the tiny judges): byte-level BPE over ``Ġword`` pieces, ids 0-255 the byte symbols,
  then the merges ``BpeTrainer`` learns.
* T5 / UMT5: a small unigram vocabulary with ``<pad>``, ``</s>``, ``<unk>`` as ids 0, 1, 2, then
  ``▁``, single characters and ``▁word`` pieces. Characters outside the vocabulary become
  ``<unk>``.

All are deterministic: the same code builds byte-identical tokenizer files.
"""

from __future__ import annotations

import json
from functools import lru_cache

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
CLIP_MAX_LENGTH = 77
T5_MAX_LENGTH = 512  # what the real SD3 tokenizer_3 / Wan UMT5 tokenizers carry; pipelines pass max_sequence_length
CLIP_MERGES = 486  # 512 byte symbols + 486 merges + 2 specials = 1000 ids

# A small English corpus: words a video prompt tends to use. Only its word set matters.
_CORPUS = """
a an the and or of in on at to from with without by for into onto over under above below near
behind between through across around along toward after before during while as is are was were
be been being it its this that these those there here who what which where when how why very
more most less few many much some all every each one two three four five first last next new old
young big small large tiny huge long short tall wide high low fast slow quick calm bright dark
light heavy soft hard warm cold hot cool wet dry clean empty full open closed quiet loud happy
sad beautiful cute scary strange simple detailed realistic cinematic photorealistic dramatic
epic vivid colorful golden silver red orange yellow green blue purple pink brown black white
gray grey cat cats dog dogs bird birds fish horse horses cow lion tiger bear fox wolf rabbit
panda monkey elephant dragon robot robots car cars train plane boat ship bike bicycle truck bus
rocket astronaut man men woman women child children girl boy people person crowd family friend
city street road bridge building house tower castle village town room kitchen garden park forest
tree trees flower flowers grass leaf leaves mountain mountains hill river lake sea ocean beach
wave waves sky cloud clouds sun sunset sunrise moon star stars rain snow storm wind fog fire
water ice desert island field valley space planet earth world night day morning evening winter
summer spring autumn light shadow smoke dust sand rock stone wood glass metal paper walk walking
walks run running runs fly flying flies swim swimming jump jumping dance dancing play playing sit
sitting stand standing look looking watch watching ride riding drive driving eat eating drink
sleep sleeping move moving turn turning rise rising fall falling grow growing float floating
burn burning shine shining glow glowing sing singing talk talking smile smiling wear wearing
hold holding camera shot close up view aerial wide angle slow motion zoom pan tracking scene
style digital art painting photo photograph video film movie anime cartoon sketch render
rendering lighting color colors texture background foreground portrait landscape high quality
resolution sharp focus blur motion smooth transition frame frames turn into becomes edit make
add remove change replace style transfer instruct prompt world virtual minecraft game pixel
"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-to-symbol table (the ``tokenizers`` ByteLevel alphabet, in byte order)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def train_bpe_merges(words: list[str], num_merges: int, end_of_word_suffix: str = "",
                     add_prefix_space: bool = False) -> list[tuple[str, str]]:
    """The first ``num_merges`` merges ``tokenizers``' ``BpeTrainer`` learns over ``words``
    (byte-level symbols; ``end_of_word_suffix`` marks a word's last symbol, as CLIP's ``</w>``).

    Deterministic: the trainer breaks ties between equally frequent pairs by symbol id, and the
    ids of the byte symbols (and of their suffixed forms, declared up front as special tokens,
    else numbered in hash order) are fixed before training.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    alphabet = [bytes_to_unicode()[b] for b in range(256)]
    suffixed = [s + end_of_word_suffix for s in alphabet] if end_of_word_suffix else []
    suffix = {"end_of_word_suffix": end_of_word_suffix} if end_of_word_suffix else {}
    tokenizer = Tokenizer(models.BPE(**suffix))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=len(suffixed) + len(alphabet) + num_merges, min_frequency=0, show_progress=False,
        initial_alphabet=alphabet, special_tokens=suffixed, **suffix)
    tokenizer.train_from_iterator(words, trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [(a, b) for a, b in merges[:num_merges]]


def corpus_words() -> list[str]:
    """The corpus' distinct words, sorted."""
    return sorted(set(_CORPUS.split()))


@lru_cache(maxsize=1)
def clip_vocab_and_merges(num_merges: int = CLIP_MERGES) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocab (the layout above) and ``num_merges`` merges learnt over the corpus."""
    base = [bytes_to_unicode()[b] for b in range(256)]
    merges = train_bpe_merges(corpus_words(), num_merges, end_of_word_suffix="</w>")
    vocab_list = _with_merged(base + [s + "</w>" for s in base], merges) + [CLIP_BOS, CLIP_EOS]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def _with_merged(symbols: list[str], merges: list[tuple[str, str]]) -> list[str]:
    """``symbols`` followed by each merge's new symbol, in merge order, once each."""
    out, known = list(symbols), set(symbols)
    for a, b in merges:
        if a + b not in known:
            known.add(a + b)
            out.append(a + b)
    return out


@lru_cache(maxsize=1)
def byte_bpe_vocab_and_merges(extra_words: tuple[str, ...] = (), num_merges: int = 300,
                              ) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    """Qwen2-style byte-level BPE over the corpus and ``extra_words``: ids 0-255 are the byte
    symbols, then the learnt merges (``Ġword``: words follow a space)."""
    words = sorted(set(corpus_words()) | set(extra_words))
    merges = train_bpe_merges(words, num_merges, add_prefix_space=True)
    vocab_list = _with_merged([bytes_to_unicode()[b] for b in range(256)], merges)
    return tuple((tok, i) for i, tok in enumerate(vocab_list)), tuple(merges)


def build_clip_tokenizer(model_max_length: int = CLIP_MAX_LENGTH):
    """A transformers ``CLIPTokenizer`` (byte-level BPE, tokenizers backend) built from the vocab above."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        unk_token=CLIP_EOS,
        bos_token=CLIP_BOS,
        eos_token=CLIP_EOS,
        pad_token=CLIP_EOS,
        model_max_length=model_max_length,
    )


@lru_cache(maxsize=1)
def t5_vocab() -> list[tuple[str, float]]:
    """Unigram pieces with log-probability scores: specials, ``▁``, characters, ``▁word`` pieces."""
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-_()[]{}/\\@#$%&*+=<>~`^|"
    pieces += [(c, -10.0) for c in chars]
    pieces += [("▁" + c, -9.0) for c in chars]
    seen = {p for p, _ in pieces}
    for word in corpus_words():
        for piece, score in (("▁" + word, -5.0), ("▁" + word.capitalize(), -6.0)):
            if piece not in seen:
                seen.add(piece)
                pieces.append((piece, score))
    for suffix in ("s", "es", "ed", "ing", "ly", "er", "est", "ion", "tion", "ness", "ful", "less"):
        if suffix not in seen:
            seen.add(suffix)
            pieces.append((suffix, -7.0))
    return pieces


def build_t5_tokenizer(model_max_length: int = T5_MAX_LENGTH):
    """A transformers ``T5Tokenizer`` (unigram, tokenizers backend), usable for T5 and UMT5 encoders."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=list(t5_vocab()), extra_ids=0, model_max_length=model_max_length)
