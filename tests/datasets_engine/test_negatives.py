"""Hard-negative mining: rank window, own-section exclusion, false-negative margin, determinism."""
from __future__ import annotations

import random

from datasets_app.engine.formats import QARecord, RetrievalRecord
from datasets_app.engine.negatives import (
    CorpusChunk,
    MiningConfig,
    effective_window,
    mine_hard_negatives,
    records_from_qa,
    tokenize,
)

# A small hand-made reimbursement corpus. p is the positive; "dup" is a near-duplicate of it
# in another document (a likely false negative); "sib" shares p's section.
ZH = [
    CorpusChunk("p", "差旅费报销需要提供发票原件和行程单，出差结束后三十日内提交。", "办法A", ("第二章", "差旅费")),
    CorpusChunk("sib", "差旅费报销的住宿标准按城市分类执行，超标部分自理。", "办法A", ("第二章", "差旅费")),
    CorpusChunk("dup", "差旅费报销需要提供发票原件和行程单，出差结束后三十日内提交审核。", "办法B", ("附录",)),
    CorpusChunk("n1", "会议费报销需要提供会议通知和签到表，发票原件必不可少。", "办法A", ("第三章", "会议费")),
    CorpusChunk("n2", "培训费报销需要提供培训通知、发票和参训人员名单。", "办法A", ("第四章", "培训费")),
    CorpusChunk("n3", "差旅期间的伙食补助按天计算，不需要发票。", "办法A", ("第二章", "补助")),
    CorpusChunk("n4", "劳务费发放需要提供身份证复印件和银行卡号。", "办法A", ("第五章", "劳务费")),
    CorpusChunk("n5", "固定资产采购需要走政府采购流程。", "办法C", ()),
    CorpusChunk("n6", "实验室安全守则：离开实验室前关闭水电。", "守则", ()),
]
QUERY = RetrievalRecord("差旅费报销需要提供哪些材料，多久内提交？", "p", ZH[0].text)

OPEN_WINDOW = MiningConfig(rank_start=1, rank_end=100, num_negatives=10)


def test_tokenize_chinese_and_english():
    assert "差旅费" in tokenize("差旅费报销需要发票")
    assert tokenize("Fault E21: Grid over-voltage!") == ["fault", "e21", "grid", "over", "voltage"]


def test_excludes_positive_own_section_and_too_close():
    res = mine_hard_negatives([QUERY], ZH, OPEN_WINDOW)
    ids = [i for i, _ in res.records[0].negatives]
    assert ids, res.skipped
    assert "p" not in ids  # the positive itself
    assert "sib" not in ids  # the positive's own section
    assert "dup" not in ids  # scores within 5% of the positive: likely a false negative
    assert "n1" in ids and "n2" in ids  # real hard negatives: other sections, same vocabulary
    assert "n6" not in ids  # shares no term: not a hard negative at all
    assert all(text == {c.id: c.text for c in ZH}[i] for i, text in res.records[0].negatives)


def test_margin_and_section_rules_are_what_exclude():
    loose = mine_hard_negatives(
        [QUERY], ZH, MiningConfig(rank_start=1, rank_end=100, num_negatives=10, relative_margin=10.0, exclude_same_section=False)
    )
    ids = [i for i, _ in loose.records[0].negatives]
    assert "dup" in ids and "sib" in ids and "p" not in ids
    assert ids[0] == "dup"  # hardest first


def test_rank_window_skips_the_top():
    full = [i for i, _ in mine_hard_negatives([QUERY], ZH, OPEN_WINDOW).records[0].negatives]
    windowed = mine_hard_negatives([QUERY], ZH, MiningConfig(rank_start=5, rank_end=9, num_negatives=10))
    ids = [i for i, _ in windowed.records[0].negatives]
    assert windowed.window == (5, 9)
    assert set(ids) < set(full) and full[0] not in ids


def test_window_shrinks_for_small_corpora():
    assert effective_window(1000, MiningConfig()) == (30, 100)
    start, end = effective_window(10, MiningConfig())
    assert 2 <= start < end == 10
    assert effective_window(1, MiningConfig()) == (1, 1)
    assert effective_window(3, MiningConfig()) == (2, 3)


def test_deterministic_and_order_independent():
    corpus = ZH[:]
    a = mine_hard_negatives([QUERY], corpus, OPEN_WINDOW)
    random.Random(1).shuffle(corpus)
    b = mine_hard_negatives([QUERY], corpus, OPEN_WINDOW)
    assert a == b


def test_english_corpus_and_missing_positive():
    corpus = [
        CorpusChunk("e21", "E21 grid overvoltage: check the grid voltage and the DC bus.", "manual", ("Faults", "E21")),
        CorpusChunk("e22", "E22 grid undervoltage: check the grid connection.", "manual", ("Faults", "E22")),
        CorpusChunk("e30", "E30 fan failure: clean the fan.", "manual", ("Faults", "E30")),
        CorpusChunk("ins", "Installation: mount the inverter on a wall.", "manual", ("Install",)),
    ]
    recs = [
        RetrievalRecord("what does fault E21 grid overvoltage mean", "e21", corpus[0].text),
        RetrievalRecord("unknown", "nope", "text"),
    ]
    res = mine_hard_negatives(recs, corpus, OPEN_WINDOW)
    assert [i for i, _ in res.records[0].negatives] == ["e22"]
    assert res.records[1] == recs[1] and res.skipped[0][0] == 1


def test_positive_found_by_text_when_id_missing():
    """Records imported from FlagEmbedding/sentence-transformers files have no chunk ids."""
    by_text = RetrievalRecord(QUERY.query, "", ZH[0].text)
    res = mine_hard_negatives([by_text], ZH, OPEN_WINDOW)
    assert res.records[0].negatives == mine_hard_negatives([QUERY], ZH, OPEN_WINDOW).records[0].negatives
    assert not res.skipped


def test_scales_to_a_thousand_chunks_quickly():
    import time

    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]
    corpus = [
        CorpusChunk(f"c{i:04d}", " ".join(rng.choice(words) for _ in range(30)), f"d{i % 50}", (str(i % 7),))
        for i in range(1000)
    ]
    recs = [RetrievalRecord(" ".join(corpus[i].text.split()[:6]), corpus[i].id, corpus[i].text) for i in range(200)]
    t = time.perf_counter()
    res = mine_hard_negatives(recs, corpus)
    assert time.perf_counter() - t < 10
    assert res.window == (30, 100)
    assert sum(1 for r in res.records if len(r.negatives) == 7) > 150


def test_records_from_qa_leave_out_held_out_and_unsourced():
    qa = [
        QARecord("差旅费报销需要哪些材料？", "发票原件和行程单。", "p", ZH[0].text),
        QARecord("测试集问题", "答", "n1", ZH[3].text, held_out=True),
        QARecord("没有来源的问题", "答"),
    ]
    recs = records_from_qa(qa)
    assert recs == (RetrievalRecord("差旅费报销需要哪些材料？", "p", ZH[0].text),)
    assert len(records_from_qa(qa, include_held_out=True)) == 2
    mined = mine_hard_negatives(recs, ZH, OPEN_WINDOW).records[0]
    assert mined.negatives and "p" not in dict(mined.negatives)
