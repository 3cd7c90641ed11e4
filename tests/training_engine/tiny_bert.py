"""A tiny BERT sentence-transformers model, built locally once per test session: no downloads.

2 layers, hidden 32, a WordPiece vocabulary trained by ``tokenizers`` on the sentences below
(plus a few Chinese ones, one character per token as in BERT), wrapped as
``Transformer → Pooling(mean) → Normalize`` and saved as a sentence-transformers folder.

The synthetic retrieval domain: each query is an invented code word ("zorbix") that shares no
token with its passage, so the untrained model ranks passages near chance and only training
can connect them. BERT's default init (0.02) is kept on purpose: larger inits (0.05–0.2)
make MNRL on this set learn far less in a few steps; the cross-encoder built from it needs
a high learning rate (5e-3) to leave its flat start.

Import the fixture into a test module: ``from tests.training_engine.tiny_bert import tiny_bert``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CODE_WORDS = ["zorbix", "quandle", "flemmet", "brastow", "yindle", "korvath", "plimsy", "drovex",
              "mirtle", "snarbo", "tuvolk", "wexley", "gondry", "haspin", "jukvar", "olbrit"]
PASSAGES = [
    "Pigs need clean water every day and a dry place to sleep.",
    "Fault code E07 means the inverter has lost its connection to the grid.",
    "Travel expenses are paid back within thirty days of the trip.",
    "The meal allowance is one hundred yuan for each working day.",
    "Taxi receipts must show the date, the route and the fare.",
    "Claims over five thousand yuan are approved by the dean.",
    "Sows are moved to the farrowing pen a week before they give birth.",
    "A red blinking light on the panel shows the battery is too hot.",
    "Hotel bills are refunded up to five hundred yuan per night.",
    "Piglets are weaned when they are about four weeks old.",
    "Reset the inverter by holding the power button for ten seconds.",
    "Conference fees need the invitation letter and a signed attendance sheet.",
    "Vaccinate the herd against swine fever every spring.",
    "The solar panels produce less power when they are covered in dust.",
    "International trips must be approved one month in advance.",
    "Feed growing pigs three times a day with a balanced ration.",
]
PAIRS = [{"query": q, "positive": p, "negatives": [], "score": None} for q, p in zip(CODE_WORDS, PASSAGES)]

# Sentence pairs with a similarity score in [0, 1] (cosent / cosine objectives).
SCORED = [
    ("Pigs need clean water every day.", "Pigs must drink clean water daily.", 0.9),
    ("Pigs need clean water every day.", "The inverter lost its grid connection.", 0.1),
    ("Taxi receipts must show the fare.", "A taxi receipt shows the route and the fare.", 0.85),
    ("Taxi receipts must show the fare.", "Piglets are weaned at four weeks.", 0.05),
    ("Reset the inverter with the power button.", "Hold the power button to reset the inverter.", 0.95),
    ("Reset the inverter with the power button.", "Hotel bills are refunded per night.", 0.0),
    ("The dean approves large claims.", "Claims over five thousand yuan are approved by the dean.", 0.8),
    ("The dean approves large claims.", "Solar panels produce less power in dust.", 0.1),
]
SCORED_ROWS = [{"query": a, "positive": b, "negatives": [], "score": s} for a, b, s in SCORED]

CHINESE = ["差旅住宿费每晚报销上限是五百元。", "出租车费需要正规发票和行程单。", "母猪分娩前一周转入产房。",
           "逆变器故障代码表示电网连接中断。"]
ENGLISH_EXTRA = ["The quick brown fox jumps over the lazy dog.",
                 "Questions about one domain are answered by small models."]
CORPUS = PASSAGES + [a for a, _, _ in SCORED] + [b for _, b, _ in SCORED] + CHINESE + ENGLISH_EXTRA + CODE_WORDS
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
DONE = ".complete"


def _build_tokenizer(folder: Path):
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    wp = BertWordPieceTokenizer(lowercase=True, handle_chinese_chars=True, strip_accents=True)
    wp.train_from_iterator(CORPUS * 3, vocab_size=800, min_frequency=1, special_tokens=SPECIALS,
                           show_progress=False)
    # transformers 5: the tokenizer takes the vocabulary itself (a dict), not a vocab.txt path
    return BertTokenizerFast(vocab=wp.get_vocab(), do_lower_case=True, strip_accents=True)


def build_tiny_bert(out_dir: Path, *, seed: int = 0, hidden: int = 32) -> Path:
    """Build (once) and return a sentence-transformers folder holding a random 2-layer BERT."""
    out_dir = Path(out_dir)
    if (out_dir / DONE).is_file():
        return out_dir
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    hf = tmp / "hf"
    tok = _build_tokenizer(hf)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    BertModel(config).save_pretrained(str(hf))
    tok.save_pretrained(str(hf))
    transformer = Transformer(str(hf), max_seq_length=64)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    st = tmp / "model"
    model.save(str(st))
    (st / DONE).write_text("ok\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(st, out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """Path of the tiny BERT sentence-transformers folder (built once per session)."""
    return build_tiny_bert(tmp_path_factory.getbasetemp() / "tiny-bert-st")
