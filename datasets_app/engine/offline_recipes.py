"""Offline default teachers for the "paraphrase" and "entities" recipes: rules, no model.

Why rules: a small local model rewrites "3000元" as "3,000元以上" or invents entity types,
and a user without a key still needs a first dataset. So paraphrases swap question words
and frames whose equivalence holds regardless of the rest of the sentence (是否可以 ↔
能不能, "How do I" ↔ "How can I"), and numbers, codes and quoted terms are masked before
any rule runs, so they come back byte for byte. Entities are the kinds a regex can find
with confidence (amounts, dates, article numbers, fault codes, department names); spans
follow CLUENER (``end`` inclusive) so they feed ``formats.EntityRecord`` directly.
No Django, no network.
"""
from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable

from .formats import EntitySpan
from .textnorm import cjk_ratio, normalize_question

# ====================================================================== paraphrases

# Spans no rule may touch: quoted terms, document titles, and any token holding a digit
# (3000, 3,000, E100.1, F0012, 1234-2020, v2). They are swapped for private-use
# characters while the rules run, so a rule cannot change or drop them.
_PROTECT = re.compile(
    r"“[^”\n]{1,60}”|「[^」\n]{1,60}」|『[^』\n]{1,60}』|《[^》\n]{1,60}》|\"[^\"\n]{1,60}\""
    r"|(?<![A-Za-z0-9])'[^'\n]{1,40}'(?![A-Za-z0-9])"
    r"|[A-Za-z0-9]*\d[A-Za-z0-9]*(?:[.,:/\-][A-Za-z0-9]+)*"
)
_PH0 = 0xE000  # first private-use code point used as a placeholder
_PH = "\ue000-\uf8ff"

_ZH_WH = re.compile(r"什么|多少|哪|谁|几|如何|怎|为何|为什么|还是|多大|何种")
_ZH_PREFIXES = ("请问", "我想问一下，", "想咨询一下，")
_ZH_PREFIX_RE = re.compile(r"^(?:请问|我想问一下|想问一下|想咨询一下|我想了解一下|我想知道)[，,]?")
_ZH_UNITS = r"个工作日|个月|个|天|日|年|次|周|小时|分钟|项|条|份|头|只|名|人|家|台|张"
_LEAD = r"((?:[^，？]*，)?)"  # an optional leading context clause ("根据《…》，")

_Rule = Callable[[str], list[str]]


def _mask(text: str) -> tuple[str, list[str]]:
    saved: list[str] = []

    def put(m: re.Match[str]) -> str:
        saved.append(m.group(0))
        return chr(_PH0 + len(saved) - 1)

    return _PROTECT.sub(put, text), saved


def _unmask(text: str, saved: list[str]) -> str:
    return re.sub(f"[{_PH}]", lambda m: saved[ord(m.group(0)) - _PH0], text)


def protected_tokens(text: str) -> list[str]:
    """Numbers, codes and quoted terms a paraphrase must keep, sorted (a multiset)."""
    return sorted(m.group(0) for m in _PROTECT.finditer(text))


def _swap(text: str, pattern: str, choices: tuple[str, ...]) -> list[str]:
    """Replace the first match of ``pattern`` by each other member of ``choices``."""
    m = re.search(pattern, text)
    if not m:
        return []
    return [text[: m.start()] + c + text[m.end() :] for c in choices if c != m.group(0)]


def _sub(text: str, pattern: str, repls: tuple[str, ...]) -> list[str]:
    """One variant per replacement template, applied to the first match only."""
    m = re.search(pattern, text)
    if not m:
        return []
    return [text[: m.start()] + m.expand(r) + text[m.end() :] for r in repls]


# ---------------------------------------------------------------- Chinese rules


def _zh_condition(t: str) -> list[str]:
    """什么情况下 ↔ 在何种情况下 ↔ 哪些情形下."""
    return _swap(t, r"在?(?:什么|何种|哪种|哪些)(?:情况|情形)下",
                 ("什么情况下", "在什么情况下", "在何种情况下", "哪些情形下"))


def _zh_how(t: str) -> list[str]:
    """如何 ↔ 怎样 ↔ 怎么 (not 无论如何, 怎么办, 怎么样)."""
    return _swap(t, r"(?<!无论)(?<!不知)如何|怎样(?!的)|怎么(?![样办回着])", ("如何", "怎样", "怎么"))


def _zh_why(t: str) -> list[str]:
    return _swap(t, r"为什么|为何", ("为什么", "为何"))


def _zh_whether(t: str) -> list[str]:
    """是否可以 ↔ 能不能 ↔ 可不可以; 是否需要 ↔ 需不需要; 是否X？ ↔ X吗？."""
    out: list[str] = []
    out += _swap(t, r"是否可以|是否能够?|能否|能不能|可不可以", ("是否可以", "能不能", "可不可以"))
    out += _swap(t, r"是否需要|需不需要", ("是否需要", "需不需要"))
    if not out:
        out += _swap(t, r"是否|是不是", ("是否", "是不是"))
    single = t.count("是否") == 1 and not _ZH_WH.search(t) and t.endswith("？")
    if single:
        m = re.search(r"是否(?=[\u4e00-\u9fff" + _PH + r"]{2})", t)
        if m:
            out.append(t[: m.start()] + t[m.end() : -1] + "吗？")
    elif "是否" not in t and not _ZH_WH.search(t):
        out += _sub(t, r"(?<![不对相反适供响呼感效回答报理])(可以|需要|应当|必须|应(?![用对付该届聘邀征]))([^？吗]{1,30})吗？$", (r"是否\1\2？",))
        out += _sub(t, r"(?<![不])可以([^？吗]{1,30})吗？$", (r"能不能\1？",))
    return out


def _zh_need(t: str) -> list[str]:
    """需要 ↔ 须/要 as a modal; 须/需 → 需要."""
    out: list[str] = []
    m = re.search(r"(?<![是否不必所无])需要(?![的求不])(?=[\u4e00-\u9fff" + _PH + "])", t)
    if m:
        rest = t[m.end() :]
        for c in ("要",) if re.match(r"多少|什么|哪|几", rest) else ("须", "要"):
            out.append(t[: m.start()] + c + rest)
    out += _sub(t, r"(?<![必无])须(?![知])", ("需要",))
    out += _sub(t, r"(?<![必急所无])需(?![要求不])", ("需要",))
    return out


def _zh_amount(t: str) -> list[str]:
    """多少天 ↔ 几天; 比例是多少 → 比例有多大; 是多少 ↔ 为多少 at the end."""
    out = _sub(t, r"多少(?=" + _ZH_UNITS + ")", ("几",))
    out += _sub(t, r"(?<![这那])几(?=" + _ZH_UNITS + ")", ("多少",))
    out += _sub(t, r"(比例|比率|幅度|面积|规模|年龄)是多少", (r"\1有多大",))
    out += _swap(t, r"[是为]多少(?=？$)", ("是多少", "为多少"))
    return out


def _zh_which(t: str) -> list[str]:
    """哪些X ↔ 有哪些X; 需要哪些材料 → 需要的材料有哪些; 需要什么 ↔ 需要哪些."""
    out = _sub(t, r"^" + _LEAD + r"有哪些(?=.{2})", (r"\1哪些",))
    if not out:
        out += _sub(t, r"^" + _LEAD + r"哪些(?=.{2})", (r"\1有哪些",))
    noun = r"([\u4e00-\u9fff]{1,6})？$"
    verbish = re.compile(r"才|可以|能够|是|的|会|应|需要|要(?![求件点素])")
    m = re.search(r"^(.*[\u4e00-\u9fff])(需要|包括|包含|涉及|提交|准备|提供)哪些" + noun, t)
    if m and not verbish.search(m.group(3)):
        out.append(f"{m.group(1)}{m.group(2)}的{m.group(3)}有哪些？")
    m = re.search(r"^(.*[\u4e00-\u9fff])有哪些" + noun, t)
    if m and not re.search(r"[还都共也的]$", m.group(1)) and not verbish.search(m.group(2)):
        out.append(f"{m.group(1)}的{m.group(2)}有哪些？")
    out += _sub(t, r"(需要|包括|提交|准备|提供)什么(?=[\u4e00-\u9fff])", (r"\1哪些",))
    out += _sub(t, r"(需要|包括|提交|准备|提供)哪些(?=[\u4e00-\u9fff])", (r"\1什么",))
    return out


def _zh_definition(t: str) -> list[str]:
    """什么是X？ ↔ X是什么？ ↔ X指的是什么？ ↔ X是什么意思？ (definition questions only)."""
    forms = ("什么是{x}？", "{x}是什么？", "{x}指的是什么？", "{x}是什么意思？")
    p = _ZH_PREFIX_RE.match(t)
    head, body = (t[: p.end()], t[p.end() :]) if p else ("", t)
    m = re.fullmatch(_LEAD + r"什么是([^，？]{1,20})？", body)
    if not m:
        m = re.fullmatch(_LEAD + r"([^，？]{1,20}?)(?:是什么意思|指的是什么|是指什么)？", body)
    if not m or _ZH_WH.search(m.group(2)) or _ZH_PREFIX_RE.match(m.group(2)):
        return []
    if len(m.group(2)) < 2 and not re.fullmatch(f"[{_PH}]", m.group(2)):
        return []
    return [head + m.group(1) + f.format(x=m.group(2)) for f in forms]


def _zh_basis(t: str) -> list[str]:
    """根据《X》， ↔ 按照《X》的规定， ↔ 依据《X》，."""
    m = re.match(r"(?:根据|按照|依据)([" + _PH + r"])(?:的规定)?，", t)
    if not m:
        return []
    p = m.group(1)
    return [f + t[m.end() :] for f in (f"根据{p}，", f"按照{p}的规定，", f"依据{p}，") if f != m.group(0)]


def _zh_prefix(t: str) -> list[str]:
    """Add a polite lead-in (请问…), or drop one the user wrote."""
    m = _ZH_PREFIX_RE.match(t)
    if m:
        rest = t[m.end() :]
        return [rest] if len(rest) >= 4 else []
    if len(re.findall(r"[\u4e00-\u9fff]", t)) < 4:
        return []  # "请问E100？" asks nothing a reader can answer
    return [p + t for p in _ZH_PREFIXES]


_ZH_RULES: tuple[_Rule, ...] = (
    _zh_condition, _zh_how, _zh_why, _zh_whether, _zh_need, _zh_amount, _zh_which,
    _zh_definition, _zh_basis, _zh_prefix,
)

# ---------------------------------------------------------------- English rules

_EN_NOT_TERM = re.compile(
    r"(?i)\b(?:the|your|my|this|that|these|those|to|for|of|in|on|with|if|when|maximum|minimum|max|min|default|"
    r"limit|deadline|number|amount|rate|price|cost|time|temperature|pressure|size|weight|capacity|difference|"
    r"purpose|reason|procedure|best|correct|recommended|required|allowed|range|value|setting|level|name|date|"
    r"voltage|current|speed|frequency|\w+ing)\b"
)
_EN_AUX = r"(?:is|are|does|do|should|can|must|will|need|needs|was|were)"
_EN_NOT_NOUN = {
    "is", "are", "was", "were", "does", "do", "did", "can", "could", "should", "would", "will", "must",
    "happens", "happened", "if", "about", "to", "time", "kind", "type", "sort", "else", "causes", "makes",
}


def _en_how(t: str) -> list[str]:
    """How do I ↔ How can I ↔ How should I; How do I X? ↔ What are the steps to X?."""
    out: list[str] = []
    m = re.match(r"How (do|can|should) (I|we) (.+)\?$", t)
    if m:
        subj, rest = m.group(2), m.group(3)
        out += [f"How {a} {subj} {rest}?" for a in ("do", "can", "should") if a != m.group(1)]
        if subj == "I":
            out += [f"What are the steps to {rest}?", f"What is the procedure to {rest}?"]
    out += _sub(t, r"^How to (.+)\?$", (r"How do I \1?", r"How can I \1?"))
    out += _sub(t, r"^What (?:is the procedure|are the steps) to (.+)\?$", (r"How do I \1?",))
    return out


def _en_can(t: str) -> list[str]:
    """Can I X? ↔ Am I allowed to X? ↔ May I X? ↔ Is it allowed to X?."""
    out = _sub(t, r"^Can I (.+)\?$", (r"Am I allowed to \1?", r"May I \1?", r"Is it allowed to \1?"))
    out += _sub(t, r"^Can we (.+)\?$", (r"Are we allowed to \1?", r"May we \1?"))
    out += _sub(t, r"^(?:Am I|Is it) (?:allowed|permitted) to (.+)\?$", (r"Can I \1?",))
    out += _sub(t, r"^May I (.+)\?$", (r"Can I \1?",))
    return out


def _en_meaning(t: str) -> list[str]:
    """What does X mean? ↔ What is meant by X? ↔ What is the meaning of X?; "What is X?" for terms."""
    m = re.match(r"What does (.+) mean\?$", t) or re.match(r"What is (?:meant by|the meaning of) (.+)\?$", t)
    if m:
        x = m.group(1)
        forms = [f"What does {x} mean?", f"What is meant by {x}?", f"What is the meaning of {x}?"]
        if re.search(r"(?i)\b(?:code|fault|error|alarm|light|led|signal|symbol|message)\b", x):
            forms.append(f"What does {x} indicate?")
        return [f for f in forms if f != t]
    m = re.match(r"What is (?:(an?) )?(.+)\?$", t)
    if m:
        x = m.group(2)
        termish = len(x.split()) <= 5 and not _EN_NOT_TERM.search(x)
        if termish and (m.group(1) or re.search(f"[{_PH}]", x) or x[:1].isupper() or len(x.split()) <= 3):
            label = f"{m.group(1)} {x}" if m.group(1) else x
            return [f"What does {label} mean?", f"What is meant by {label}?"]
    return []


def _en_which(t: str) -> list[str]:
    """What documents are…? ↔ Which documents are…? (only before a noun then a verb)."""
    m = re.match(r"(What|Which) ([a-z]+(?: [a-z]+)?) (?=" + _EN_AUX + r"\b)", t)
    if not m or any(w in _EN_NOT_NOUN for w in m.group(2).split()):
        return []
    other = "Which" if m.group(1) == "What" else "What"
    return [other + t[len(m.group(1)) :]]


def _en_what_to_do(t: str) -> list[str]:
    """What should I do if…? ↔ What do I do if…? ↔ What do I need to do if…?."""
    return _swap(t, r"^What (?:should I do|do I do|do I need to do) (?=if|when)",
                 ("What should I do ", "What do I do ", "What do I need to do "))


def _en_why(t: str) -> list[str]:
    return _swap(t, r"^(?:Why|For what reason) ", ("Why ", "For what reason "))


_CONTRACTIONS = (("do not", "don't"), ("does not", "doesn't"), ("is not", "isn't"), ("are not", "aren't"),
                 ("cannot", "can't"), ("should not", "shouldn't"), ("What is", "What's"))


def _en_contractions(t: str) -> list[str]:
    out = []
    for long, short in _CONTRACTIONS:
        for a, b in ((long, short), (short, long)):
            if re.search(rf"\b{re.escape(a)}\b(?= \S)", t):
                out.append(re.sub(rf"\b{re.escape(a)}\b", b, t, count=1))
    return out


def _lower_first(t: str) -> str:
    word = t.split(" ", 1)[0]
    if word == "I" or not word[:1].isupper() or any(c.isupper() or c.isdigit() for c in word[1:]):
        return t
    return t[0].lower() + t[1:]


def _en_prefix(t: str) -> list[str]:
    m = re.match(r"(?:Please tell me|Quick question|Could you tell me)[:,] ", t)
    if m:
        rest = t[m.end() :]
        return [rest[0].upper() + rest[1:]] if len(rest) > 4 else []
    if not re.match(r"(?:What|Which|Who|When|Where|Why|How|Can|Could|May|Is|Are|Do|Does|Should|Will)\b", t):
        return []  # a bare fragment ("E100?") is no question a lead-in could fix
    return [f"Please tell me: {_lower_first(t)}", f"Quick question: {_lower_first(t)}"]


_EN_RULES: tuple[_Rule, ...] = (
    _en_how, _en_can, _en_meaning, _en_which, _en_what_to_do, _en_why, _en_contractions, _en_prefix,
)


def _finish(text: str, zh: bool) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    if not zh and text[:1].islower():
        text = text[0].upper() + text[1:]
    return text


def paraphrase_question(question: str, n: int = 3, *, lang: str = "", seed: int = 0) -> list[str]:
    """Up to ``n`` rewordings of ``question`` that keep its meaning and its answer valid.

    Deterministic for a given question, ``n`` and ``seed``. Never returns the original
    (compared normalised) or a duplicate, never alters numbers, codes or quoted terms, and
    returns fewer than ``n`` (possibly none) rather than a variant no rule vouches for.
    """
    q = (question or "").strip()
    if n < 1 or not q or re.search(f"[{_PH}]", q):
        return []  # private-use characters would collide with the placeholders
    zh = (lang or "").lower().startswith("zh") or (not lang and cjk_ratio(q) > 0.2)
    masked, saved = _mask(q)
    if len(saved) > 0x1800:  # absurd input: never run out of private-use placeholders
        return []
    masked = re.sub(r"[\s。.！!？?]+$", "", masked) + ("？" if zh else "?")
    rules = _ZH_RULES if zh else _EN_RULES
    lead_in = _zh_prefix if zh else _en_prefix
    # Real rewordings first, a polite lead-in ("请问…", "Quick question: …") only after:
    # buckets = one rule, two rules, then either with the lead-in rule involved.
    buckets: list[list[str]] = [[], [], [], []]
    first: list[tuple[str, bool]] = []
    for rule in rules:
        first.extend((v, rule is lead_in) for v in rule(masked))
    for v, lead in first:
        buckets[2 if lead else 0].append(v)
    for v, lead in first[:60]:
        for rule in rules:
            buckets[3 if lead or rule is lead_in else 1].extend(rule(v))
    rng = random.Random(seed * 1_000_003 + zlib.crc32(q.encode("utf-8")))
    for b in buckets:
        rng.shuffle(b)
    keep = protected_tokens(q)
    seen = {normalize_question(q)}
    out: list[str] = []
    for v in (v for b in buckets for v in b):
        text = _finish(_unmask(v, saved), zh)
        key = normalize_question(text)
        if not key or key in seen or protected_tokens(text) != keep or len(text) > 2 * len(q) + 30:
            continue
        seen.add(key)
        out.append(text)
        if len(out) == n:
            break
    return out


# ====================================================================== entities

# Label set of the offline entity teacher, in tie-break order (equal-length overlaps).
OFFLINE_ENTITY_TYPES = ("money", "percent", "date", "duration", "quantity", "article", "code", "organization")

_NUM = r"(?<![A-Za-z0-9_.])(?:\d{1,3}(?:[,，]\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
_CNUM = r"[零〇一二两三四五六七八九十百千万亿]+"
_MONTHS = (r"(?:January|February|March|April|May|June|July|August|September|October|November|December"
           r"|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.?")
_ORG_STOP = "的是在由经向到交报送与和及或对将把等至给时须需应可不得于为以并且若如按据凡各本该其此每请所被让使令后前"
_ORG_CH = rf"[^\W\d_{_ORG_STOP}A-Za-z]"  # a CJK character that can belong to a name
_ORG_DEPT = (
    r"财务处|财务部|财务科|人事处|人事部|审计处|审计部|采购部|采购处|后勤处|科技处|教务处|学生处|保卫处|资产处|"
    r"国资处|研究生院|办公室|财政局|财政部|税务局|教育局|教育部|农业农村局|农业农村部|畜牧局|畜牧兽医局|商务局|"
    r"市场监督管理局|人力资源部|纪委|党委"
)
_ORG_GENERIC = (
    r"有限责任公司|股份有限公司|有限公司|集团公司|集团|公司|委员会|银行|医院|研究院|研究所|养殖场|"
    r"合作社|协会"
)
_ORG_EDU = r"大学|学院|学校"

_ENTITY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("money", re.compile(
        rf"(?:人民币|RMB|CNY|￥|¥)\s?{_NUM.replace('(?<![A-Za-z0-9_.])', '')}\s?(?:多|余)?(?:万|亿|千|百)?(?:元|块)?"
        rf"|{_NUM}\s?(?:多|余)?(?:万|亿|千|百)?\s?(?:元|块钱|美元|欧元|英镑|日元|港元)"
        rf"|{_CNUM}(?:元|万元|亿元)"
        rf"|(?:US\$|\$|€|£)\s?{_NUM.replace('(?<![A-Za-z0-9_.])', '')}(?:\s?(?:k|K|million|billion|thousand)\b)?"
        rf"|{_NUM}\s?(?:USD|EUR|GBP|dollars|euros|yuan)\b"
    )),
    ("percent", re.compile(rf"{_NUM}\s?(?:%|％|‰)|百分之(?:{_CNUM}|\d+(?:\.\d+)?)|{_NUM}\s?(?:percent|per cent)\b")),
    ("date", re.compile(
        r"(?<!\d)\d{4}年\d{1,2}月(?:\d{1,2}[日号])?|(?<!\d)\d{1,2}月\d{1,2}[日号]|(?<!\d)\d{4}年(?![\d代度])"
        r"|(?<![\d\-/.])\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?![\d\-/.])"
        rf"|\b{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b|\b\d{{1,2}}\s+{_MONTHS}\s+\d{{4}}\b"
        rf"|\b{_MONTHS}\s+\d{{4}}\b"
    )),
    ("duration", re.compile(
        rf"(?:{_NUM}|{_CNUM})\s?(?:个工作日|工作日|自然日|个月|天|小时|分钟|周|个星期|星期)"
        rf"|(?:{_NUM}|{_CNUM})日(?=内|以内|之内|后|起)|(?<!\d)(?:\d{{1,3}}|{_CNUM})年(?=内|以内|之内|后|以上|以下|的|，|。)"
        rf"|{_NUM}(?:\s|-)(?:business |working |calendar )?"
        r"(?:days?|weeks?|months?|years?|hours?|minutes?|seconds?|hrs?|mins?)\b"
    )),
    ("quantity", re.compile(
        rf"{_NUM}\s?(?:多|余)?(?:万|千)?"
        r"(?:头|只|吨|公斤|千克|克|斤|毫升|升|平方米|立方米|厘米|毫米|公里|千米|米|亩|℃|摄氏度|台|套|张|瓶|袋|伏|瓦|千瓦)"
        rf"|{_NUM}\s?"
        r"(?:°C|°F|℃|kW|kWh|kHz|Hz|kPa|MPa|Pa|bar|psi|mA|V|A|W|mm|cm|km|m|kg|mg|g|lbs?|mL|ml|L|rpm|Nm)(?![A-Za-z0-9])"
    )),
    ("article", re.compile(
        rf"(?:第(?:{_CNUM}|\d+)(?:编|章|节|条|款|项|部分))+"
        r"|\b(?:Article|Section|Chapter|Clause|Art\.|Sec\.)\s?\d+(?:\.\d+)*"
    )),
    ("code", re.compile(
        r"(?<![A-Za-z0-9])(?:GB/T|GB/Z|GB|JB/T|NY/T|HG/T|SN/T|DB\d{2}/T|ISO/IEC|ISO|IEC|EN|DIN|ANSI|IEEE|UL)"
        r"\s?\d+(?:[.\-]\d+)*(?:\s?[-—:：]\s?(?:19|20)\d{2})?(?![A-Za-z0-9])"
        r"|(?<![A-Za-z0-9])[A-Z]{1,3}-?\d{2,5}(?:\.\d{1,3})?[A-Z]?(?![A-Za-z0-9])"
    )),
    ("organization", re.compile(
        rf"(?<!{_ORG_CH})(?:{_ORG_CH}{{0,10}}(?:{_ORG_DEPT})(?!门)"
        rf"|{_ORG_CH}{{2,14}}?(?:{_ORG_GENERIC})|{_ORG_CH}{{1,10}}?(?:{_ORG_EDU})|(?:{_ORG_EDU})(?![生城路]))"
        r"|\b(?!(?:The|Contact|Call|Please|See|From|By|To|For|With|Ask|Send)\b)(?:[A-Z][\w&\-]*\s+){1,5}"
        r"(?:Co\.,?\s?Ltd\.?|Inc\.|Ltd\.|LLC|GmbH|Corporation|Corp\.|Company|University|Committee|Association|Bureau)"
        r"|\b(?:Ministry|Department) of (?:[A-Z]\w+)(?: (?:and|of) [A-Z]\w+)*"
    )),
)


def annotate_entities(text: str, *, lang: str = "") -> list[EntitySpan]:
    """Typed entity spans (labels from ``OFFLINE_ENTITY_TYPES``) found by rules.

    CLUENER convention: ``end`` is inclusive and ``mention == text[start:end + 1]``.
    Overlapping candidates resolve to the longest (ties: label order), and the result is
    sorted by start. ``lang`` is accepted for symmetry with the model teachers; each rule
    is already specific to its script, so mixed Chinese/English text is handled as is.
    """
    del lang
    cands: list[tuple[int, int, int, str]] = []  # (start, end_exclusive, priority, label)
    for prio, (label, pat) in enumerate(_ENTITY_PATTERNS):
        for m in pat.finditer(text):
            s, e = m.start(), m.end()
            while e > s and text[e - 1].isspace():
                e -= 1
            while s < e and text[s].isspace():
                s += 1
            if e - s >= (2 if label == "organization" else 1):
                cands.append((s, e, prio, label))
    cands.sort(key=lambda c: (-(c[1] - c[0]), c[2], c[0]))
    taken: list[tuple[int, int, str]] = []
    for s, e, _prio, label in cands:
        if all(e <= a or s >= b for a, b, _ in taken):
            taken.append((s, e, label))
    taken.sort()
    return [EntitySpan(label, s, e - 1, text[s:e]) for s, e, label in taken]


__all__ = ["OFFLINE_ENTITY_TYPES", "annotate_entities", "paraphrase_question", "protected_tokens"]
