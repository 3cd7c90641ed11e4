"""Offline default teacher: question-answer pairs from a chunk's own structure.

Small local LLMs write junk QA pairs (see FACTS.md), so the default teacher uses no
model and no key. It reads the clause structure of Chinese regulations (articles,
definitions, thresholds, deadlines, prohibitions), English manuals (fault codes,
definitions, "To X, do Y" steps) and, as a fallback for narrative text, turns sentences
with dates, quantities and copulas into wh-questions. Every answer is a verbatim span of
the chunk, so grounding holds by construction; the quality filters catch the rest.
"""
from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .textnorm import (
    Span,
    cjk_ratio,
    looks_like_injection,
    normalize_question,
    split_sentences,
)


@dataclass(frozen=True)
class TeacherChunk:
    """The teacher's view of a chunk: its text, where it sits, and its language."""

    text: str
    heading_path: tuple[str, ...] = ()  # document title first, then chapter/section
    language: str = ""  # "zh" or "en"; empty = sniffed from the text


@dataclass(frozen=True)
class CandidatePair:
    """One generated pair; ``start``/``end`` locate the evidence in the chunk text."""

    question: str
    answer: str
    start: int  # evidence span start (chars into the chunk)
    end: int  # evidence span end (exclusive); the answer lies inside it
    rule: str  # which rule produced it, for review and for measuring rules
    confidence: float  # rule prior in [0, 1]; higher = usually better pairs

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and for Django tasks."""
        return asdict(self)


@dataclass(frozen=True)
class OfflineTeacherConfig:
    """Knobs of the offline teacher; defaults suit one chunk of ~200–1000 chars."""

    max_pairs: int = 3  # pairs kept per chunk, best first
    seed: int = 0  # mixes into a per-chunk RNG that orders equally good variants
    distinct_sentences: bool = True  # take one pair per sentence before a second one
    max_question_chars: int = 60  # longer questions read like copied sentences
    min_question_chars: int = 6  # shorter ones lack enough content to be answerable
    max_answer_chars: int = 300  # clause answers are trimmed at a sentence boundary
    fallback: bool = True  # narrative wh-/cloze rules when structure rules find little
    rules: tuple[str, ...] = field(default_factory=tuple)  # only these rules; empty = all


# ---------------------------------------------------------------- shared pieces

_ZH_DOC_SUFFIX = re.compile(r"(办法|规定|制度|细则|条例|守则|规范|规程|指南|手册|章程|准则|标准|通知|方案|法)$")
_ARTICLE = re.compile(r"(?:(?<=^)|(?<=[\s。；;：:]))第[一二三四五六七八九十百千零〇两\d]+条(?:\s*[（(]([^）)\n]{1,20})[）)])?\s*")
_CHAPTER_NUM = re.compile(r"^(?:第[一二三四五六七八九十百\d]+[章节篇部分]|[\d.]+|[一二三四五六七八九十]+、)\s*")
_CLAUSE_END = "，,；;。！？!?\n：:"
_WH_UNIT = (
    r"个工作日|个月|平方公里|平方千米|平方米|公里|千米|厘米|毫米|米|公顷|亩|美元|欧元|英镑|日元|港元|万元|亿元|元"
    r"|岁|次|场|分钟|秒|小时|天|日圆|日|周年|周|年|种|座|部|家|所|项|件|吨|公斤|千克|克|层|届|集|首|张|本|篇|条|枚|块"
    r"|辆|架|艘|倍|度|个|人|名|位|%|％"
)
_QTY = re.compile(r"(?<![\d.,，])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(多|余)?(万|亿|千|百)?(" + _WH_UNIT + r")")
_DATE = re.compile(r"(?:公元前?|西元前?)?\d{3,4}年\d{1,2}月(?:\d{1,2}日)?")
_YEAR = re.compile(r"(?:公元前?|西元前?)?(?<!\d)\d{3,4}年(?![\d代度])")
_MODALS = [
    ("必须", "必须"), ("应当", "应当"), ("需要", "需要"), ("方可", "方可"), ("不得", "不得"),
    ("不予", "不予"), ("可以", "可以"), ("须", "需要"), ("需", "需要"), ("应", "应当"), ("可", "可以"),
]
_MODAL_GUARD = {
    "应": r"(?<![对相反适供响呼感效回答报理])应(?![用对付该届聘邀征])",
    "需": r"(?<![必急所])需(?![求])",
    "须": r"(?<![必])须",
    "可": r"(?<![不许认])可(?![能是见爱口靠])",
}
_PRONOUN_START = re.compile(r"^(?:他们|她们|它们|牠们|其后|他|她|它|牠|该(?=[\u4e00-\u9fff]{0,3}[，是于在])|其(?![他中余实次]))")


def _doc_and_topic(heading_path: Iterable[str]) -> tuple[str, str]:
    """Split a heading path into (document title, innermost topic), numbering removed."""
    parts = [p.strip() for p in heading_path if p and p.strip()]
    if not parts:
        return "", ""
    doc = parts[0].strip("《》 ")
    topic = _CHAPTER_NUM.sub("", parts[-1]).strip() if len(parts) > 1 else ""
    return doc, topic


def _zh_prefix(doc: str, topic: str) -> str:
    """A lead-in that makes a regulation question self-contained ("根据《…》，")."""
    if doc and _ZH_DOC_SUFFIX.search(doc):
        return f"根据《{doc}》，"
    if doc:
        return f"关于{doc}，"
    if topic:
        return f"关于{topic}，"
    return ""


def _clause_bounds(text: str, pos: int, lo: int, hi: int) -> tuple[int, int]:
    """The clause (between commas/semicolons) around ``pos`` within [lo, hi)."""
    s = pos
    while s > lo and (text[s - 1] not in _CLAUSE_END or _soft_comma(text, s - 1, lo)):
        s -= 1
    e = pos
    while e < hi and (text[e] not in _CLAUSE_END or _soft_comma(text, e, lo)):
        e += 1
    return s, e


def _inside_brackets(text: str, pos: int, lo: int) -> bool:
    """True when ``pos`` sits inside an open （…） or (…): questions there read badly."""
    depth = 0
    for ch in text[lo:pos]:
        if ch in "（(「『“《":
            depth += 1
        elif ch in "）)」』”》" and depth:
            depth -= 1
    return depth > 0


def _soft_comma(text: str, i: int, lo: int) -> bool:
    """A comma that does not end a clause: inside brackets, or a thousands separator."""
    if text[i] in ",，" and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit():
        return True
    return _inside_brackets(text, i, lo)


def _trim_answer(text: str, limit: int) -> str:
    """Cut a long clause answer at its last sentence end within ``limit`` chars."""
    if len(text) <= limit:
        return text
    cut = max(text.rfind(c, 0, limit) for c in "。；;.!?！？")
    return text[: cut + 1] if cut > limit // 3 else text[:limit]


def _q(text: str) -> str:
    """Finish a question: strip stray punctuation and end with one question mark."""
    text = re.sub(r"[（(](?:[^）)]{0,8}[:：])?\s*[）)]", "", text)
    text = text.strip().strip("，,、；;：:。 ")
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"(?<=[\u4e00-\u9fff，。？]) (?=[\u4e00-\u9fff])|(?<=[\u4e00-\u9fff]) (?=[，。？])", "", text)
    if not text:
        return ""
    return text + ("？" if cjk_ratio(text) > 0.3 else "?")


@dataclass
class _Ctx:
    """Per-chunk state shared by the rules."""

    text: str
    doc: str
    topic: str
    prefix: str
    sentences: list[Span]
    rng: random.Random
    config: OfflineTeacherConfig


_Rule = Callable[[_Ctx], list[tuple[CandidatePair, int]]]  # pair + sentence key


def _pair(ctx: _Ctx, question: str, answer_start: int, answer_end: int, rule: str, conf: float,
          ev: tuple[int, int] | None = None) -> CandidatePair | None:
    """Build a pair whose answer is ``text[answer_start:answer_end]`` (verbatim)."""
    answer = ctx.text[answer_start:answer_end].strip()
    if not answer:
        return None
    trimmed = _trim_answer(answer, ctx.config.max_answer_chars)
    lead = ctx.text.find(answer, answer_start)
    start, end = ev if ev else (lead, lead + len(trimmed))
    return CandidatePair(_q(question), trimmed, start, end, rule, conf)


def _sentence_key(ctx: _Ctx, pos: int) -> int:
    """Index of the sentence containing ``pos`` (used to prefer distinct sentences)."""
    for i, s in enumerate(ctx.sentences):
        if s.start <= pos < s.end:
            return i
    return len(ctx.sentences)


def _strip_article_head(text: str, start: int, end: int) -> int:
    """Skip a leading "第三条（…）" header so answers start at the rule itself."""
    m = _ARTICLE.match(text, start, end)
    return m.end() if m else start


# ---------------------------------------------------------------- Chinese regulation rules


def _zh_articles(ctx: _Ctx) -> list[tuple[CandidatePair, int]]:
    """"第三条（报销时限）…" → "根据《…》，报销时限有什么规定？" with the article body."""
    out = []
    heads = list(_ARTICLE.finditer(ctx.text))
    for i, m in enumerate(heads):
        title = (m.group(1) or "").strip()
        if not title or not (ctx.doc or ctx.topic):
            continue  # "第三条有什么规定？" needs context a reader does not have
        body_end = heads[i + 1].start() if i + 1 < len(heads) else len(ctx.text)
        where = f"《{ctx.doc}》" if ctx.doc and _ZH_DOC_SUFFIX.search(ctx.doc) else (ctx.doc or ctx.topic)
        q = f"{where}对{title}有什么规定"
        p = _pair(ctx, q, m.end(), body_end, "zh_article_heading", 0.8)
        if p:
            out.append((p, _sentence_key(ctx, m.end())))
    return out


_ZH_DEF = re.compile(
    r"(?:本(?:办法|规定|制度|细则|条例|标准|指南|手册|规范|章程|法)所称(?:的)?)?"
    r"(?P<term>[^，。；：:\s“”\"（）()]{1,20}?)[，,]?(?:是指|系指|指的是)(?P<def>[^。；;\n]+)"
)


def _zh_definitions(ctx: _Ctx) -> list[tuple[CandidatePair, int]]:
    """"本办法所称X，是指Y" / "X是指Y" → "什么是X？" answered by Y."""
    out = []
    for m in _ZH_DEF.finditer(ctx.text):
        term = m.group("term")
        term = re.sub(r"^(?:第[一二三四五六七八九十百\d]+条\s*(?:[（(][^）)]*[）)])?|所称|本.{1,3}所称)", "", term).strip()
        if len(term) < 2 or re.search(r"^(?:其实|这|那|此|它|他|她)|[就也都则即还又]$", term):
            continue
        q = f"{ctx.prefix}什么是{term}" if ctx.prefix.startswith("根据") else f"什么是{term}"
        p = _pair(ctx, q, m.start("def"), m.end("def"), "zh_definition", 0.9)
        if p:
            out.append((p, _sentence_key(ctx, m.start())))
    return out


_CMP_BEFORE = re.compile(r"(超过|高于|多于|大于|低于|少于|不足|不超过|达到|满)$")
_CMP_AFTER = re.compile(r"^(及以上|以上|及以下|以下|以内|(?=的))")


def _modal_after(text: str, pos: int, end: int) -> tuple[str, str, int] | None:
    """First modal verb (须/应/不得…) after ``pos``: (normalised modal, action, pos)."""
    best = None
    for raw, norm in _MODALS:
        m = re.compile(_MODAL_GUARD.get(raw, re.escape(raw))).search(text, pos, end)
        i = m.start() if m else -1
        if i >= 0 and (best is None or i < best[2] or (i == best[2] and len(raw) > best[3])):
            best = (norm, raw, i, len(raw))
    if best is None:
        return None
    norm, raw, i, n = best
    act_end = i + n
    while act_end < end and text[act_end] not in "，,；;。！？!?\n":
        act_end += 1
    return norm, text[i + n : act_end].strip(), i


def _zh_thresholds(ctx: _Ctx) -> list[tuple[CandidatePair, int]]:
    """Amount/threshold conditions with an obligation: "X3000元及以上的需Y"."""
    if not _is_regulation(ctx):
        return []
    out = []
    for si, s in enumerate(ctx.sentences):
        body = _strip_article_head(ctx.text, s.start, s.end)
        for m in _QTY.finditer(ctx.text, body, s.end):
            cs, _ce = _clause_bounds(ctx.text, m.start(), body, s.end)
            before = ctx.text[cs : m.start()]
            after = ctx.text[m.end() : s.end]
            cb = _CMP_BEFORE.search(before)
            ca = _CMP_AFTER.match(after)
            if not cb and not (ca and ca.group(1)):
                continue
            modal = _modal_after(ctx.text, m.end(), s.end)
            if not modal or not modal[1]:
                continue
            norm, action, _ = modal
            subj = before[: cb.start()] if cb else before
            subj = re.sub(r"^(?:凡|对|对于|如|若|单笔|单次|其中)", "", subj.strip())
            word = cb.group(1) if cb else ca.group(1)
            how = "低于多少" if word in ("低于", "少于", "不足", "以下", "及以下") else (
                "超过多少" if word in ("超过", "高于", "多于", "大于") else "达到多少")
            if word in ("不超过", "以内"):
                how = "不超过多少"
            unit = m.group(4)
            pct = unit if unit in ("%", "％") else ""
            variants = []
            if len(subj) >= 2:
                variants.append(f"{ctx.prefix}{subj}{how}{pct}{norm}{action}")
            variants.append(f"{ctx.prefix}什么情况下{norm}{action}")
            for k, q in enumerate(variants):
                p = _pair(ctx, q, body, s.end, "zh_threshold", round(0.85 - 0.05 * k, 2))
                if p:
                    out.append((p, si))
            break
    return out


_DEADLINE = re.compile(r"(?<![\d.])(\d+)\s*(个工作日|个月|日|天|小时|周|年)(内|之内|以内)")


def _zh_deadlines(ctx: _Ctx) -> list[tuple[CandidatePair, int]]:
    """"应在费用发生后30日内提交" → "…应在费用发生后多少日内提交…？"."""
    if not _is_regulation(ctx):
        return []
    out = []
    for si, s in enumerate(ctx.sentences):
        body = _strip_article_head(ctx.text, s.start, s.end)
        m = _DEADLINE.search(ctx.text, body, s.end)
        if not m:
            continue
        cs, ce = _clause_bounds(ctx.text, m.start(), body, s.end)
        q = ctx.text[cs : m.start()] + "多少" + m.group(2) + m.group(3) + ctx.text[m.end() : ce]
        if not ctx.text[cs : m.start()].strip():
            continue
        p = _pair(ctx, ctx.prefix + q, body, s.end, "zh_deadline", 0.85)
        if p:
            out.append((p, si))
    return out


_PROHIBIT = re.compile(r"(不得|禁止|严禁|不准|不允许)")


def _is_regulation(ctx: _Ctx) -> bool:
    """Articles ("第三条") or a rule-book title: the clause rules apply, narrative ones do not."""
    return bool(_ARTICLE.search(ctx.text) or (ctx.doc and _ZH_DOC_SUFFIX.search(ctx.doc)))


def _zh_obligations(ctx: _Ctx) -> list[tuple[CandidatePair, int]]:
    """Prohibitions → "是否可以…？"; obligations → "…应当怎么做？" (weaker)."""
    if not _is_regulation(ctx):
        return []
    out = []
    for si, s in enumerate(ctx.sentences):
        body = _strip_article_head(ctx.text, s.start, s.end)
        m = _PROHIBIT.search(ctx.text, body, s.end)
        if m:
            cs, ce = _clause_bounds(ctx.text, m.start(), body, s.end)
            subj = ctx.text[cs : m.start()].strip()
            act = ctx.text[m.end() : ce].strip()
            if len(act) >= 2:
                q = f"{ctx.prefix}{subj}是否可以{act}"
                p = _pair(ctx, q, body, s.end, "zh_prohibition", 0.7)
                if p:
                    out.append((p, si))
            continue
        modal = _modal_after(ctx.text, body, s.end)
        if _QTY.search(ctx.text, body, s.end):
            continue  # the threshold/deadline/amount rules ask better questions here
        if modal and modal[0] in ("应当", "必须", "需要"):
            norm, act, i = modal
            cs, _ = _clause_bounds(ctx.text, i, body, s.end)
            subj = ctx.text[cs:i].strip()
            if 2 <= len(subj) <= 20 and len(act) >= 2 and ctx.prefix:
                p = _pair(ctx, f"{ctx.prefix}{subj}{norm}怎么做", body, s.end, "zh_obligation", 0.45)
                if p:
                    out.append((p, si))
    return out


def _zh_amounts(ctx: _Ctx) -> list[tuple[CandidatePair, int]]:
    """Other amounts/percentages in regulation text: cloze "多少元/百分之多少"."""
    if not _is_regulation(ctx):
        return []
    out = []
    for si, s in enumerate(ctx.sentences):
        body = _strip_article_head(ctx.text, s.start, s.end)
        m = _QTY.search(ctx.text, body, s.end)
        if not m or _DEADLINE.match(ctx.text, m.start()):
            continue
        cs, ce = _clause_bounds(ctx.text, m.start(), body, s.end)
        unit = m.group(4)
        wh = "百分之多少" if unit in ("%", "％") else "多少" + (m.group(3) or "") + unit
        q = ctx.text[cs : m.start()] + wh + ctx.text[m.end() : ce]
        if len(ctx.text[cs : m.start()].strip()) < 2:
            continue
        p = _pair(ctx, ctx.prefix + q, body, s.end, "zh_amount", 0.6)
        if p:
            out.append((p, si))
    return out


# ---------------------------------------------------------------- Chinese narrative fallback


_DEMONSTRATIVE = re.compile(
    r"(?:该|此|这个|这一|这)(?:游戏|公司|企业|书|片|剧|作品|组织|机构|城市|地区|市|县|镇|村|岛|山|河|湖"
    r"|车站|站|学校|大学|寺|教堂|建筑|球队|俱乐部|乐队|团体|物种|动物|植物|疾病|病|系统|软件|网站|节目|电影|歌曲|专辑"
    r"|公园|机场|港口|桥|道路|铁路|线路|路线|品种|化合物|元素|奖项|比赛|赛事|事件|战役|条约|法律|政党|家族|人物|角色|小说|漫画|动画)"
)


_RANGE = "-－–—~～至到"
_ROLE = re.compile(r"(?:家|者|(?<!成)员|师|手|官|帝|王|将领|将军|长|士|星|人物|演员|歌手|作家|画家|诗人|学者|医生|女子|男子|徒|主角|角色|选手|球员|运动员|第一人|毕业生|学生)$")
_CONNECTOR = re.compile(r"^(?:以及|在此之前|之前|换言之|总之|此外|另外|其后|随后|然后|同时|后来|并且|而且|但是|不过|因此|所以|并|而|但|且|又|亦)[，,]?")
# Copula complements that are cut mid-phrase ("…信仰中", "新贵（", "一座长702米").
_BAD_COPULA = re.compile(r"(?:中|前|时|后|的|[（(]|\d+[^\d]{0,3})$|^(?:一位于|指|个)")
_SUBORDINATE = re.compile(r"^(?:关于[^，]*，)?(?:因为|由于|随着|为了|经过|直到|除了|在|当)|(?:下|中|后|时|前)$")
_DANGLING = re.compile(r"(?:以来|之后|以后|后|时|期间|之际|之前|以前|前|中)$")


def _unbalanced(q: str) -> bool:
    """A question cut inside "（…）" or "“…”" reads as garbage."""
    return q.count("（") != q.count("）") or q.count("(") != q.count(")") or q.count("“") != q.count("”")


def _subject_fix(ctx: _Ctx, q: str, first_clause: bool) -> str | None:
    """Make a narrative question self-contained: pronoun → title, or name the title."""
    title = ctx.doc
    if not title:
        return q if first_clause else None
    core = re.split(r"[（(]", title)[0]
    short = core.split("·")[-1] if "·" in core else core
    q = _CONNECTOR.sub("", q)
    if core in q or (len(short) >= 2 and short in q):
        return q
    for m in re.finditer(r"(?:该|此|这[个座本部张位家首款场次所条]?)(?=[\u4e00-\u9fff])", q):
        # "该银行" in a passage titled "越南投资发展银行" is the title itself.
        for k in range(min(6, len(q) - m.end()), 0, -1):
            if core.endswith(q[m.end() : m.end() + k]) and k < len(core):
                return q[: m.start()] + core + q[m.end() + k :]
    m = _DEMONSTRATIVE.match(q) or _PRONOUN_START.match(q) or _DEMONSTRATIVE.search(q)
    if m:
        return q[: m.start()] + core + q[m.end() :]
    return f"关于{core}，{q}"


def _zh_narrative(ctx: _Ctx) -> list[tuple[CandidatePair, int]]:
    """Wh-questions from dates, years, quantities, "是" copulas and "位于/由…" phrases."""
    if _is_regulation(ctx):
        return []  # regulation text: the clause rules above ask better questions
    out = []
    title = re.split(r"[（(]", ctx.doc)[0] if ctx.doc else ""
    for si, s in enumerate(ctx.sentences):
        if looks_like_injection(s.text):
            continue
        found: list[tuple[int, int, str, str, float]] = []  # start, end, wh, rule, conf
        for m in _DATE.finditer(ctx.text, s.start, s.end):
            found.append((m.start(), m.end(), "什么时候", "zh_date", 0.55))
        for m in _YEAR.finditer(ctx.text, s.start, s.end):
            if not any(a <= m.start() < b for a, b, *_ in found):
                found.append((m.start(), m.end(), "哪一年", "zh_year", 0.5))
        for m in _QTY.finditer(ctx.text, s.start, s.end):
            if any(a <= m.start() < b for a, b, *_ in found):
                continue
            unit = m.group(4)
            if (unit == "年" and len(m.group(1)) >= 3) or unit in ("日", "月"):
                continue  # years and calendar days belong to the date rules
            wh = "百分之多少" if unit in ("%", "％") else "多少" + (m.group(3) or "") + unit
            if unit in ("%", "％"):
                wh = "多少"  # "占总数的多少" reads better than a literal percent sign
            found.append((m.start(), m.end(), wh, "zh_quantity", 0.5))
        for m in re.finditer(r"(?<!是)(?:位于|分布(?:在|于))([^，。；,;（(的]{2,30})(?=[，。；,;]|$)", ctx.text[s.start : s.end]):
            a = s.start + m.start(1)
            found.append((a, s.start + m.end(1), "哪里", "zh_location", 0.45))
        for m in re.finditer(
            r"由([^，。；,;由]{2,20}?)(开发|发行|出版|创办|创立|建立|设立|设计|执导|主演|编剧|作曲|作词|"
            r"主持|运营|经营|制作|发明|提出|建造|修建|兴建|管理|负责)", ctx.text[s.start : s.end]):
            found.append((s.start + m.start(1), s.start + m.end(1), "谁", "zh_agent", 0.45))
        # Copula definition in the sentence naming the title: "X是Y" → "X是什么？"
        if title and s.text.startswith(title) and not any(p.rule == "zh_copula" for p, _ in out):
            m = re.match(
                re.escape(title) + r"(?:[（(][^）)]*[）)])?(?:[，,][^，,。]{1,40}){0,4}?[，,]?(?:是|为)(?!否)",
                ctx.text[s.start : s.end],
            )
            if m:
                a = s.start + m.end()
                _, e = _clause_bounds(ctx.text, a, a, s.end)
                ans = ctx.text[a:e]
                if 2 <= e - a <= 60 and not _BAD_COPULA.search(ans):
                    found.append((a, e, "什么", "zh_copula", 0.6))
        for a, b, wh, rule, conf in found:
            if _inside_brackets(ctx.text, a, s.start):
                continue
            prev, nxt = ctx.text[a - 1 : a] if a else "", ctx.text[b : b + 1]
            if ctx.text[max(s.start, a - 2) : a] in ("纪念", "庆祝"):
                continue  # "为纪念1932年6月24日（的政变）": the date stands for an event
            if (prev and prev in _RANGE + "第前:：、") or (nxt and (nxt in _RANGE + "（(尾底初末中旬" or nxt.isdigit())):
                continue  # "30－42厘米", "1984年至1992年", "天正3年（1575年）": half a range
            cs, ce = _clause_bounds(ctx.text, a, s.start, s.end)
            if rule == "zh_copula":
                role = _ROLE.search(ctx.text[a:b])
                q = f"{title}是谁" if role else f"{title}是什么"
            else:
                q_start = cs
                # Pull in the sentence's opening clause when it holds the subject.
                if cs > s.start:
                    head_s, head_e = _clause_bounds(ctx.text, s.start, s.start, s.end)
                    if head_e - head_s <= 20 and ce - head_s <= ctx.config.max_question_chars:
                        q_start = head_s
                q = ctx.text[q_start:a] + wh + ctx.text[b:ce]
                if cs == a and 1 < ce - b < 6:
                    continue  # "2005年美国大奖赛": a bare noun phrase, no predicate to ask about
                if cs == a and ce - b <= 1 and ce < s.end:
                    # "2010年，该游戏在中国大陆上线" → "泡泡战士哪一年在中国大陆上线"
                    ns, ne = _clause_bounds(ctx.text, ce + 1, ce + 1, s.end)
                    rest = _subject_fix(ctx, ctx.text[ns:ne], True) or ""
                    core = re.split(r"[（(]", title)[0] if title else ""
                    if rest and wh in ("哪一年", "什么时候") and not _SUBORDINATE.search(rest):
                        lead = f"关于{core}，" if rest.startswith(f"关于{core}，") else ""
                        q = lead + rest[len(lead) :] + "是在" + wh
                    else:
                        continue
                q = _CONNECTOR.sub("", q)
                if "我" in q:
                    continue  # a question built inside a first-person quote
                if len(q) - len(wh) < 5 or _DANGLING.search(q) or _unbalanced(q):
                    continue
                fixed = _subject_fix(ctx, q, q_start == s.start)
                if fixed is None:
                    continue
                q = fixed
            p = _pair(ctx, q, a, b, rule, conf, ev=(s.start, s.end))
            if p:
                out.append((p, si))
    return out


# ---------------------------------------------------------------- English manual rules

_FAULT = re.compile(
    r"(?m)^[ \t]*(?:(?:fault|error|alarm)\s+(?:code\s+)?)?(?P<code>[A-Z]{1,4}-?\d{1,4}[A-Z]?)\b[ \t]*[:：\-–—]?[ \t]*"
    r"(?P<desc>[^\n]*)"
)
_REMEDY = re.compile(r"(?i)\b(?:remedy|solution|fix|action|corrective action|what to do)\s*[:：]\s*")
_CAUSE = re.compile(r"(?i)\b(?:cause|possible cause|reason)s?\s*[:：]\s*")


def _en_fault_codes(ctx: _Ctx) -> list[tuple[CandidatePair, int]]:
    """"E100 over-current: … Cause … Remedy …" → meaning and fix questions."""
    out = []
    heads = list(_FAULT.finditer(ctx.text))
    where = f" on the {ctx.doc}" if ctx.doc and not re.search(r"(?i)manual|guide|handbook", ctx.doc) else ""
    for i, m in enumerate(heads):
        if not m.group("desc").strip():
            continue
        block_end = heads[i + 1].start() if i + 1 < len(heads) else len(ctx.text)
        code = m.group("code")
        rem = _REMEDY.search(ctx.text, m.start("desc"), block_end)
        mean_end = rem.start() if rem else block_end
        p = _pair(ctx, f"What does fault code {code} mean{where}", m.start("desc"), mean_end, "en_fault_meaning", 0.9)
        key = _sentence_key(ctx, m.start())
        if p:
            out.append((p, key))
        if rem:
            p = _pair(ctx, f"How do I fix fault code {code}{where}", rem.end(), block_end, "en_fault_remedy", 0.9)
            if p:
                out.append((p, key + 10_000))  # a different "sentence" so both survive
    return out


_EN_DEF = re.compile(
    r"(?P<term>(?:[\"“][^\"”]{1,40}[\"”])|(?:\b[A-Z][\w\-]*(?:\s+[\w\-]+){0,4}))\s+"
    r"(?:means|is defined as|refers to|stands for)\s+(?P<def>[^.\n]+)"
)


def _en_definitions(ctx: _Ctx) -> list[tuple[CandidatePair, int]]:
    """"X means Y" / "X is defined as Y" → "What does X mean?"."""
    out = []
    for m in _EN_DEF.finditer(ctx.text):
        term = m.group("term").strip("\"“” ")
        term = re.sub(r"^(?:The|A|An|In this manual,?)\s+", "", term)
        if len(term) < 2 or term.lower() in ("this", "it", "that"):
            continue
        p = _pair(ctx, f"What does {term} mean", m.start("def"), m.end("def"), "en_definition", 0.85)
        if p:
            out.append((p, _sentence_key(ctx, m.start())))
    return out


_EN_TO = re.compile(r"(?:^|(?<=[.\n]))\s*To (?P<goal>[a-z][^,\n]{3,80}),\s*(?P<steps>[^\n]+(?:\n\s*(?:\d+[.)]|[-*•])[^\n]+)*)")


def _en_steps(ctx: _Ctx) -> list[tuple[CandidatePair, int]]:
    """"To reset the drive, press STOP…" → "How do I reset the drive?"."""
    out = []
    for m in _EN_TO.finditer(ctx.text):
        goal = re.sub(r"\byour\b", "my", m.group("goal").strip())
        steps_end = m.end("steps")
        first_stop = ctx.text.find(". ", m.start("steps"), steps_end)
        if "\n" not in ctx.text[m.start("steps") : steps_end] and first_stop > 0:
            steps_end = first_stop + 1
        p = _pair(ctx, f"How do I {goal}", m.start("steps"), steps_end, "en_steps", 0.85)
        if p:
            out.append((p, _sentence_key(ctx, m.start("goal"))))
    return out


_ZH_RULES: dict[str, _Rule] = {
    "zh_definition": _zh_definitions,
    "zh_threshold": _zh_thresholds,
    "zh_deadline": _zh_deadlines,
    "zh_article_heading": _zh_articles,
    "zh_prohibition": _zh_obligations,
    "zh_amount": _zh_amounts,
}
_EN_RULES: dict[str, _Rule] = {
    "en_fault": _en_fault_codes,
    "en_definition": _en_definitions,
    "en_steps": _en_steps,
}


# ---------------------------------------------------------------- entry point


def _as_chunk(chunk: TeacherChunk | Mapping[str, Any]) -> TeacherChunk:
    """Accept the dataclass or a plain dict (what a Django task hands over)."""
    if isinstance(chunk, TeacherChunk):
        return chunk
    return TeacherChunk(
        text=str(chunk.get("text", "")),
        heading_path=tuple(chunk.get("heading_path") or ()),
        language=str(chunk.get("language") or ""),
    )


def generate_pairs(
    chunk: TeacherChunk | Mapping[str, Any], config: OfflineTeacherConfig = OfflineTeacherConfig()
) -> list[CandidatePair]:
    """Candidate QA pairs for one chunk, best first, at most ``config.max_pairs``.

    Deterministic: the same chunk and config give the same pairs.
    """
    c = _as_chunk(chunk)
    text = c.text
    if not text.strip():
        return []
    lang = c.language or ("zh" if cjk_ratio(text) > 0.2 else "en")
    doc, topic = _doc_and_topic(c.heading_path)
    ctx = _Ctx(
        text=text,
        doc=doc,
        topic=topic,
        prefix=_zh_prefix(doc, topic) if lang == "zh" else "",
        sentences=split_sentences(text),
        rng=random.Random(config.seed * 1_000_003 + zlib.crc32(text.encode("utf-8"))),
        config=config,
    )
    rules = dict(_ZH_RULES if lang == "zh" else _EN_RULES)
    if lang == "zh" and config.fallback:
        rules["zh_narrative"] = _zh_narrative
    if config.rules:
        rules = {k: v for k, v in rules.items() if k in config.rules}
    raw: list[tuple[CandidatePair, int]] = []
    for fn in rules.values():
        raw.extend(fn(ctx))
    return _select(raw, ctx)


def _select(raw: list[tuple[CandidatePair, int]], ctx: _Ctx) -> list[CandidatePair]:
    """Drop unusable candidates, then take the best, one per sentence first."""
    cfg = ctx.config
    seen: set[str] = set()
    ok: list[tuple[float, float, int, CandidatePair, int]] = []
    for p, key in raw:
        if not (cfg.min_question_chars <= len(p.question) <= cfg.max_question_chars):
            continue
        if looks_like_injection(p.question) or looks_like_injection(p.answer):
            continue  # the chunk's text is data; never turn an instruction into a task
        if normalize_question(p.answer) in normalize_question(p.question):
            continue  # the question gives its own answer away
        nq = normalize_question(p.question)
        if nq in seen:
            continue
        seen.add(nq)
        ok.append((-p.confidence, ctx.rng.random(), p.start, p, key))
    ok.sort(key=lambda t: (t[0], t[2], t[1]))
    chosen: list[CandidatePair] = []
    used: set[int] = set()
    if cfg.distinct_sentences:
        for *_, p, key in ok:
            if key not in used and len(chosen) < cfg.max_pairs:
                chosen.append(p)
                used.add(key)
    for *_, p, key in ok:
        if len(chosen) >= cfg.max_pairs:
            break
        if p not in chosen:
            chosen.append(p)
    return chosen
