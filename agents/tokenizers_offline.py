"""Tokenizers for the tiny model zoo, built offline from a vocabulary written here.

Nothing is downloaded. Two families, shaped like the real ones so the diffusers pipelines call
them exactly as they call real checkpoints:

* CLIP: byte-level BPE with ``</w>`` word ends. Ids 0-255 are the 256 byte symbols, 256-511 the
  same symbols ending a word, then the merges learnt below, and ``<|startoftext|>`` /
  ``<|endoftext|>`` as the two top ids (as in OpenAI's CLIP). Every byte has a symbol, so any
  text (unicode, emoji, empty) tokenizes without an unknown token.
* T5 / UMT5: a small unigram vocabulary with ``<pad>``, ``</s>``, ``<unk>`` as ids 0, 1, 2, then
  ``▁``, single characters and ``▁word`` pieces. Characters outside the vocabulary become
  ``<unk>``.

Both are deterministic: the same code builds byte-identical tokenizer files.
"""

from __future__ import annotations

from collections import Counter
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
    """GPT-2/CLIP byte-to-symbol table: printable bytes map to themselves, the rest to 256+."""
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


def learn_merges(words: list[list[str]], vocab_list: list[str],
                 num_merges: int) -> list[tuple[str, str]]:
    """Learn up to ``num_merges`` BPE merges over ``words`` (symbol lists, merged in place), most
    frequent pair first, ties broken by the pair's text so builds are reproducible; each new
    symbol is appended to ``vocab_list``."""
    merges: list[tuple[str, str]] = []
    known = set(vocab_list)
    while len(merges) < num_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for syms in words:
            pairs.update(zip(syms, syms[1:]))
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merged = best[0] + best[1]
        merges.append(best)
        if merged not in known:
            known.add(merged)
            vocab_list.append(merged)
        for syms in words:
            i = 0
            while i < len(syms) - 1:
                if (syms[i], syms[i + 1]) == best:
                    syms[i : i + 2] = [merged]
                else:
                    i += 1
    return merges


def _corpus_words() -> list[str]:
    return sorted(set(_CORPUS.split()))


@lru_cache(maxsize=1)
def clip_vocab_and_merges(num_merges: int = CLIP_MERGES) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn ``num_merges`` BPE merges over the corpus (ties broken by the pair's text) -> vocab, merges."""
    byte_sym = bytes_to_unicode()
    base = [byte_sym[b] for b in range(256)]
    vocab_list: list[str] = base + [s + "</w>" for s in base]

    words: list[list[str]] = []
    for word in _corpus_words():
        syms = [byte_sym[b] for b in word.encode("utf-8")]
        syms[-1] = syms[-1] + "</w>"
        words.append(syms)

    merges = learn_merges(words, vocab_list, num_merges)
    vocab_list += [CLIP_BOS, CLIP_EOS]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


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
    for word in _corpus_words():
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
