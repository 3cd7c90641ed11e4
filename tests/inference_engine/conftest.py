"""Fakes and corpora for the retrieval engine tests (no database, no Django).

- ``HashingEncoder``: a deterministic bag-of-words encoder (textproc tokens hashed into
  buckets, L2-normalised) that maps listed synonyms onto one token, so "dense finds what BM25
  cannot" can be built on purpose. It counts the texts it embeds.
- ``RandomEncoder``: a deterministic but meaningless vector per text (dense is useless).
- ``embedded_encoder`` (slow tests only): the real all-MiniLM-L6-v2, loaded once per session.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from inference_app.engine.index import Passage
from inference_app.engine.textproc import tokenize


class HashingEncoder:
    def __init__(self, synonyms: dict[str, str] | None = None, dim: int = 256, model_id: str = "fake:hashing"):
        self.synonyms = dict(synonyms or {})
        self.dim = dim
        self.model_id = model_id
        self.calls = 0  # encode() calls
        self.texts = 0  # texts embedded

    def _bucket(self, token: str) -> int:
        return int.from_bytes(hashlib.sha1(token.encode("utf-8")).digest()[:4], "big") % self.dim

    def encode(self, texts, batch_size: int = 32):
        self.calls += 1
        self.texts += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, text in enumerate(texts):
            for tok in tokenize(text):
                out[r, self._bucket(self.synonyms.get(tok, tok))] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


class RandomEncoder:
    def __init__(self, dim: int = 64, model_id: str = "fake:random"):
        self.dim, self.model_id = dim, model_id

    def encode(self, texts, batch_size: int = 32):
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode("utf-8")).digest()[:8], "big")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)


# A small mixed corpus: Chinese reimbursement rules and English/Chinese inverter fault codes.
CORPUS = [
    Passage("zh-travel", "差旅费报销需要提供发票原件和行程单，出差结束后三十日内提交财务处审核。", "报销办法", "d1", 3,
            ("第二章", "差旅费")),
    Passage("zh-meeting", "会议费报销需要提供会议通知、签到表和发票，会议结束后十五日内办理。", "报销办法", "d1", 5,
            ("第三章", "会议费")),
    Passage("zh-labour", "劳务费发放需要提供身份证复印件和银行卡号，由经办人签字确认。", "报销办法", "d1", 7,
            ("第五章", "劳务费")),
    Passage("e100", "E100 过流故障：输出电流超过额定值的150%，请检查负载接线和电机绝缘。", "逆变器手册", "d2", 12,
            ("故障代码",)),
    Passage("e100.1", "E100.1 过流故障：加速过程中电流过大，请延长加速时间或减轻负载。", "逆变器手册", "d2", 12,
            ("故障代码",)),
    Passage("en-grid", "Fault E21 grid over-voltage: the grid voltage exceeded the allowed range; check the grid "
            "connection and the voltage settings.", "Inverter manual", "d3", 40, ("Fault codes",)),
    Passage("en-fan", "Replace the cooling fan when it makes noise or stops turning; switch the inverter off first.",
            "Inverter manual", "d3", 55, ("Maintenance",)),
]


@pytest.fixture
def corpus():
    return list(CORPUS)


def synthetic_topics(n: int = 24):
    """Passages with distinct vocabularies; ``lexical`` queries reuse the passage's words,
    ``synonym`` queries use words the HashingEncoder maps onto them (BM25 cannot match)."""
    passages, lexical, synonym, synonyms = [], [], [], {}
    for i in range(n):
        a, b = f"term{i}alpha", f"term{i}beta"
        passages.append(Passage(f"p{i}", f"{a} {b} common filler words about topic number {i}"))
        lexical.append((f"{a} {b}", {f"p{i}"}))
        synonyms[f"syn{i}alpha"], synonyms[f"syn{i}beta"] = a, b
        synonym.append((f"syn{i}alpha syn{i}beta", {f"p{i}"}))
    return passages, lexical, synonym, synonyms


@pytest.fixture(scope="session")
def embedded_encoder():
    """The real embedded all-MiniLM-L6-v2 (slow tests only), loaded once per session."""
    from inference_app.engine.index import EMBEDDED_ENCODER, load_encoder

    return load_encoder(EMBEDDED_ENCODER)
