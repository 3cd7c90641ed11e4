"""Offline paraphrase and entity rules: meaning-keeping rewordings, exact CLUENER spans."""
from __future__ import annotations

import re

import pytest

from datasets_app.engine.formats import EntityRecord, EntitySpan, export_cluener, import_cluener
from datasets_app.engine.offline_recipes import (
    OFFLINE_ENTITY_TYPES,
    annotate_entities,
    paraphrase_question,
    protected_tokens,
)
from datasets_app.engine.textnorm import normalize_question

ZH_QUESTIONS = [
    "根据《某大学经费报销管理办法》，报销金额达到多少需要签订协议？",
    "什么情况下需要提供发票？",
    "差旅费是否可以报销？",
    "出差报销需要提交哪些材料？",
    "如何申请借款？",
    "什么是公务卡？",
    "报销应在费用发生后30日内提交吗？",
    "母猪产后几天可以配种？",
    "为什么仔猪会腹泻？",
    "报销有哪些要求？",
    "“三公经费”指的是什么？",
    "单笔超过3,000元的支出是否需要签订合同？",
]
EN_QUESTIONS = [
    "What does fault code E100.1 mean?",
    "How do I reset the drive after fault F0012?",
    "Can I use a 3,000 W heater on the 230 V line?",
    "What is an E100 fault?",
    "What documents are required for GB/T 1234-2020 compliance?",
    "What should I do if the pump shows E100?",
    "Why does the drive trip at 50 Hz?",
    "How to clear alarm A21?",
]
ALL_QUESTIONS = [(q, "zh") for q in ZH_QUESTIONS] + [(q, "en") for q in EN_QUESTIONS]


def _codes_and_digits(text: str) -> list[str]:
    """Independent of the module's own masking: codes like E100.1 and every digit run."""
    return sorted(re.findall(r"[A-Z]+\d[\d.]*|(?<![A-Z\d.])\d[\d.,]*", text))


# ---------------------------------------------------------------- paraphrases


@pytest.mark.parametrize(("question", "expected"), [
    ("什么情况下需要提供发票？", "在何种情况下需要提供发票？"),
    ("什么情况下需要提供发票？", "哪些情形下需要提供发票？"),
    ("差旅费是否可以报销？", "差旅费能不能报销？"),
    ("差旅费是否可以报销？", "差旅费可以报销吗？"),
    ("出差报销需要提交哪些材料？", "出差报销需要提交的材料有哪些？"),
    ("如何申请借款？", "怎样申请借款？"),
    ("什么是公务卡？", "公务卡指的是什么？"),
    ("母猪产后几天可以配种？", "母猪产后多少天可以配种？"),
    ("为什么仔猪会腹泻？", "为何仔猪会腹泻？"),
    ("报销有哪些要求？", "报销的要求有哪些？"),
    ("“三公经费”指的是什么？", "什么是“三公经费”？"),
    ("根据《报销办法》，出差需要提交什么材料？", "按照《报销办法》的规定，出差需要提交什么材料？"),
    ("What does fault code E100.1 mean?", "What is the meaning of fault code E100.1?"),
    ("What does fault code E100.1 mean?", "What does fault code E100.1 indicate?"),
    ("How do I reset the drive after fault F0012?", "How can I reset the drive after fault F0012?"),
    ("How do I reset the drive after fault F0012?", "What are the steps to reset the drive after fault F0012?"),
    ("Can I use a 3,000 W heater on the 230 V line?", "Am I allowed to use a 3,000 W heater on the 230 V line?"),
    ("What is an E100 fault?", "What does an E100 fault mean?"),
    ("What documents are required for GB/T 1234-2020 compliance?",
     "Which documents are required for GB/T 1234-2020 compliance?"),
    ("What should I do if the pump shows E100?", "What do I do if the pump shows E100?"),
    ("How to clear alarm A21?", "How do I clear alarm A21?"),
])
def test_known_rewording_is_among_the_variants(question: str, expected: str) -> None:
    assert expected in paraphrase_question(question, 20)


@pytest.mark.parametrize(("question", "lang"), ALL_QUESTIONS)
def test_variants_keep_numbers_codes_and_quoted_terms(question: str, lang: str) -> None:
    variants = paraphrase_question(question, 20, lang=lang)
    assert variants, f"no variant for {question!r}"
    for v in variants:
        assert _codes_and_digits(v) == _codes_and_digits(question), v
        assert protected_tokens(v) == protected_tokens(question), v
        for quoted in re.findall(r"“[^”]+”|《[^》]+》", question):
            assert quoted in v, v


@pytest.mark.parametrize(("question", "lang"), ALL_QUESTIONS)
def test_variants_are_new_distinct_and_still_questions(question: str, lang: str) -> None:
    variants = paraphrase_question(question, 20, lang=lang)
    keys = [normalize_question(v) for v in variants]
    assert normalize_question(question) not in keys
    assert len(set(keys)) == len(keys)
    assert all(v.endswith("？" if lang == "zh" else "?") for v in variants)
    if lang == "en":
        assert all(v[0].isupper() for v in variants)


@pytest.mark.parametrize(("question", "lang"), ALL_QUESTIONS[:4] + ALL_QUESTIONS[-4:])
def test_deterministic_for_a_seed_and_capped_at_n(question: str, lang: str) -> None:
    assert paraphrase_question(question, 3, lang=lang, seed=7) == paraphrase_question(question, 3, lang=lang, seed=7)
    assert len(paraphrase_question(question, 3, lang=lang)) <= 3
    assert paraphrase_question(question, 1, lang=lang) == paraphrase_question(question, 3, lang=lang)[:1]


def test_rewordings_come_before_polite_lead_ins() -> None:
    first = paraphrase_question("差旅费是否可以报销？", 3)
    assert not any(v.startswith(("请问", "我想问一下", "想咨询一下")) for v in first)
    first_en = paraphrase_question("How do I reset the drive after fault F0012?", 3)
    assert not any(v.startswith(("Please tell me", "Quick question")) for v in first_en)


def test_value_question_is_not_turned_into_a_definition() -> None:
    variants = paraphrase_question("What is the maximum temperature?", 20)
    assert variants
    assert not any("mean" in v for v in variants)
    assert "What's the maximum temperature?" in variants


@pytest.mark.parametrize("lang", ["zh", "en", ""])
def test_a_fragment_no_rule_fits_gives_nothing_rather_than_junk(lang: str) -> None:
    assert paraphrase_question("E100？", 5, lang=lang) == []
    assert paraphrase_question("", 3, lang=lang) == []


def test_fewer_than_n_when_rules_run_out() -> None:
    variants = paraphrase_question("为什么仔猪会腹泻？", 50)
    assert 1 <= len(variants) < 50
    assert paraphrase_question("什么是公务卡？", 0) == []


def test_yes_no_question_with_ma_gets_shi_fou_form() -> None:
    assert "报销是否应在费用发生后30日内提交？" in paraphrase_question("报销应在费用发生后30日内提交吗？", 20)


def test_private_use_input_is_refused_not_garbled() -> None:
    assert paraphrase_question("如何申请\ue000借款？", 3) == []


def test_placeholders_never_leak() -> None:
    for q, lang in ALL_QUESTIONS:
        for v in paraphrase_question(q, 50, lang=lang):
            assert not re.search("[\ue000-\uf8ff]", v), v

    assert paraphrase_question("什么是公务卡？", 0) == []


def test_prefix_is_dropped_rather_than_doubled() -> None:
    variants = paraphrase_question("请问，差旅补助标准是多少？", 20)
    assert "差旅补助标准是多少？" in variants
    assert not any(v.count("请问") > 1 or ("请问" in v and "我想问一下" in v) for v in variants)


# ---------------------------------------------------------------- entities

ENTITY_CASES = [
    (
        "第三条 报销金额3000元及以上的需经学校财务处审核，并于2024年3月1日前提交，报销比例为80%。",
        [("article", "第三条"), ("money", "3000元"), ("organization", "学校财务处"),
         ("date", "2024年3月1日"), ("percent", "80%")],
    ),
    (
        "人民币5万元以下的采购，须在10个工作日内完成；超过3,000 元的由某某科技有限公司承担。",
        [("money", "人民币5万元"), ("duration", "10个工作日"), ("money", "3,000 元"),
         ("organization", "某某科技有限公司")],
    ),
    (
        "根据GB/T 1234-2020，母猪妊娠期约114天，体重200公斤以上的公猪每天饲喂3千克饲料。",
        [("code", "GB/T 1234-2020"), ("duration", "114天"), ("quantity", "200公斤"), ("quantity", "3千克")],
    ),
    (
        "Fault E100.1: over-current. Call Acme Machinery Co., Ltd. within 30 days. Cost $20 per visit; "
        "15% discount since March 1, 2024. Motor rated 380 V, 50 Hz, see Section 4.2 and ISO 9001:2015, code F0012.",
        [("code", "E100.1"), ("organization", "Acme Machinery Co., Ltd."), ("duration", "30 days"),
         ("money", "$20"), ("percent", "15%"), ("date", "March 1, 2024"), ("quantity", "380 V"),
         ("quantity", "50 Hz"), ("article", "Section 4.2"), ("code", "ISO 9001:2015"), ("code", "F0012")],
    ),
    (
        "第十二章 附则 第四十条 本办法由北京市财政局负责解释，自2023年1月起施行。",
        [("article", "第十二章"), ("article", "第四十条"), ("organization", "北京市财政局"), ("date", "2023年1月")],
    ),
    (
        "报销单据交财务处，某大学经费报销管理办法。",
        [("organization", "财务处"), ("organization", "某大学")],
    ),
]


@pytest.mark.parametrize(("text", "expected"), ENTITY_CASES)
def test_annotate_entities_finds_typed_spans(text: str, expected: list[tuple[str, str]]) -> None:
    got = [(s.label, s.mention) for s in annotate_entities(text)]
    assert got == expected


PROPERTY_TEXTS = [c[0] for c in ENTITY_CASES] + [
    "２０２４年３月１日起，补贴标准为每头50元，E100报警时请停机。",
    "Replace the filter every 3 months or 500 hours; E100/E101 faults mean 12.5% loss at 40 °C.",
    "第二条第三款 经审计处、人事处审核后，于2024-03-01前拨付¥2,000。",
    "",
    "没有任何实体的一句话。",
]


@pytest.mark.parametrize("text", PROPERTY_TEXTS)
def test_spans_are_exact_sorted_disjoint_and_typed(text: str) -> None:
    spans = annotate_entities(text)
    for s in spans:
        assert s.mention == text[s.start : s.end + 1]
        assert s.label in OFFLINE_ENTITY_TYPES
        assert s.mention == s.mention.strip() and s.mention
    starts = [s.start for s in spans]
    assert starts == sorted(starts)
    for a, b in zip(spans, spans[1:]):
        assert a.end < b.start, (a, b)


def test_longest_overlap_wins() -> None:
    # "2020" alone is a year and "1234-2020" a date-like run; the standard number covers both.
    spans = annotate_entities("依据GB/T 1234-2020执行")
    assert [(s.label, s.mention) for s in spans] == [("code", "GB/T 1234-2020")]
    # A whole date beats the "1日" a duration rule could read inside it.
    assert [s.label for s in annotate_entities("3月1日内")] == ["date"]


@pytest.mark.parametrize("text", ["功能全部正常", "此处不得吸烟", "大学生补助", "本公司规定"])
def test_no_organization_from_common_words(text: str) -> None:
    assert [s for s in annotate_entities(text) if s.label == "organization"] == []


def test_spans_round_trip_through_cluener() -> None:
    text = ENTITY_CASES[0][0]
    rec = EntityRecord(text, tuple(annotate_entities(text)))
    back = import_cluener(export_cluener([rec]))
    assert back.ok
    assert {(s.label, s.start, s.end) for s in back.records[0].spans} == {(s.label, s.start, s.end) for s in rec.spans}
    assert all(isinstance(s, EntitySpan) for s in back.records[0].spans)
