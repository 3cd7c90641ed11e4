"""BM25 tokenisation: jieba words for Chinese, lower-cased word runs otherwise, whole codes kept."""
from __future__ import annotations

import pytest

from inference_app.engine.index import BM25Core
from inference_app.engine.textproc import codes, tokenize


@pytest.mark.parametrize(
    "text, must_contain",
    [
        ("差旅费报销需要发票", {"差旅费", "报销", "发票"}),
        ("E100.1 过流故障", {"e100.1", "e100", "1", "过流", "故障"}),
        ("E100.1过流故障，E100 欠压", {"e100.1", "e100", "过流", "欠压"}),
        ("Ｅ１００．１ 故障", {"e100.1", "e100", "故障"}),  # full-width code, NFKC-normalised
        ("SUN-5K 逆变器 3.5 kW", {"sun-5k", "sun", "5k", "逆变器", "3.5", "kw"}),
        ("第3.2条 报销金额3000.00元", {"3.2", "3000.00", "报销", "金额"}),
    ],
)
def test_tokens_contain(text, must_contain):
    toks = tokenize(text)
    assert must_contain <= set(toks), toks
    assert all(t == t.lower() and t.strip() for t in toks)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Fault E21: Grid over-voltage!", ["fault", "e21", "grid", "over", "voltage"]),  # no digit: no compound
        ("Check THE Fan", ["check", "the", "fan"]),
        ("E100.1 over-current", ["e100", "1", "over", "current", "e100.1"]),
        ("", []),
        ("！？。…", []),
    ],
)
def test_tokens_exact(text, expected):
    assert tokenize(text) == expected


def test_language_switch():
    assert tokenize("差旅费报销", language="en") == ["差旅费报销"]  # no jieba: the CJK run stays whole
    assert tokenize("travel 报销", language="zh") == ["travel", "报销"]


def test_codes():
    assert codes("E100.1 and SUN-5K, not over-voltage or e.g.") == ["e100.1", "sun-5k"]


def test_negatives_reuses_the_same_tokenizer():
    from datasets_app.engine import negatives

    assert negatives.tokenize is tokenize


E100 = "E100 过流故障：输出电流超过额定值的150%，请检查负载接线和电机绝缘。"
E1001 = "E100.1 过流故障：加速过程中电流过大，请延长加速时间或减轻负载。"
E101 = "E101 过压故障：直流母线电压过高，请检查输入电压和制动电阻。"


@pytest.mark.parametrize(
    "query, first, second",
    [
        ("E100.1", 1, 0),
        ("E100", 0, 1),
        ("E100.1 过流", 1, 0),
        ("E100 过流故障", 0, 1),
        ("故障代码E100.1是什么意思", 1, 0),
    ],
)
def test_fault_codes_rank_exact_code_first(query, first, second):
    core = BM25Core.build([E100, E1001, E101])
    ranked = [row for row, _ in core.top(query, 3)]
    assert ranked[:2] == [first, second], (query, core.top(query, 3))
    assert 2 not in ranked[:2]
