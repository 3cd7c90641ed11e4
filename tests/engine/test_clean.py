"""Text repair: page furniture out, broken lines joined, widths folded, Chinese punctuation kept."""
from __future__ import annotations

import pytest

from domains.engine.clean import (
    clean,
    is_page_number,
    join_lines,
    normalize_chars,
    remove_page_furniture,
)
from domains.engine.loaders import Block, LoadResult
from domains.engine.textutil import display_width


@pytest.mark.parametrize(
    "line, expected",
    [
        ("3", True),
        ("- 3 -", True),
        ("— 12 —", True),
        ("第 3 页", True),
        ("第3页 共10页", True),
        ("共10页 第3页", True),
        ("Page 3 of 10", True),
        ("page 7", True),
        ("3 / 10", True),
        ("第三条 报销金额3000元及以上的需签订协议。", False),
        ("E100 over-current", False),
        ("2.5 Wiring", False),
    ],
)
def test_page_numbers(line, expected):
    assert is_page_number(line) is expected


def _pages(*pages: list[str]) -> list[Block]:
    return [Block(text, "paragraph", n) for n, texts in enumerate(pages, start=1) for text in texts]


def test_running_header_and_page_numbers_removed_body_kept():
    blocks = _pages(
        ["某大学财务处 内部规章", "第一条 为规范报销管理，制定本办法。", "- 1 -"],
        ["某大学财务处 内部规章", "第二条 本办法适用于全校。", "- 2 -"],
        ["某大学财务处 内部规章", "第三条 报销金额3000元及以上的需签订协议。", "- 3 -"],
        ["某大学财务处 内部规章", "第四条 报销人应当负责。", "- 4 -"],
    )
    kept, removed = remove_page_furniture(blocks)
    assert removed == 8
    assert [b.text for b in kept] == [
        "第一条 为规范报销管理，制定本办法。",
        "第二条 本办法适用于全校。",
        "第三条 报销金额3000元及以上的需签订协议。",
        "第四条 报销人应当负责。",
    ]


def test_footer_with_changing_page_number_removed():
    bodies = ["Install the unit upright.", "Check the DC wiring.", "Clean the air inlets.", "Call service."]
    blocks = _pages(*[[body, f"ACME manual 2024 · {n}"] for n, body in enumerate(bodies, start=1)])
    kept, _ = remove_page_furniture(blocks)
    assert [b.text for b in kept] == bodies


def test_numbered_headings_that_differ_are_not_furniture():
    blocks = _pages(*[[f"Chapter {n} Topic {'ABCD'[n - 1]}", "Some body sentence here."] for n in range(1, 5)])
    kept, _ = remove_page_furniture(blocks)
    assert [b.text for b in kept if b.text.startswith("Chapter")] == [
        "Chapter 1 Topic A",
        "Chapter 2 Topic B",
        "Chapter 3 Topic C",
        "Chapter 4 Topic D",
    ]


def test_removed_running_header_leaves_heading_paths():
    header = "ACME Manual"
    blocks = []
    bodies = ["Install the unit upright.", "Check the DC wiring.", "Clean the air inlets."]
    for n, body in enumerate(bodies, start=1):
        blocks.append(Block(header, "heading", n, (header,), level=1))
        blocks.append(Block(body, "paragraph", n, (header,)))
    kept, _ = remove_page_furniture(blocks)
    assert [b.text for b in kept] == bodies
    assert all(b.heading_path == () for b in kept)


@pytest.mark.parametrize(
    "lines, expected",
    [
        # English hyphenation at the end of a line.
        (["The inverter stops when the tempera-", "ture exceeds the limit."], "The inverter stops when the temperature exceeds the limit."),
        # Chinese broken mid-sentence at the margin: joined without a space.
        (["第一条 为规范学校经费报销管理，提高资金使用效益，根据", "国家有关财务制度，制定本办法。"], "第一条 为规范学校经费报销管理，提高资金使用效益，根据国家有关财务制度，制定本办法。"),
        # A Chinese comma at the end always continues.
        (["报销须知，", "发票抬头必须为学校全称。"], "报销须知，发票抬头必须为学校全称。"),
        # A new article starts its own line even after a full line.
        (["第一条 为规范学校经费报销管理，提高资金使用效益，根据国家", "第二条 本办法适用于全校。"], "第一条 为规范学校经费报销管理，提高资金使用效益，根据国家\n第二条 本办法适用于全校。"),
        # A short title line is not glued to the paragraph below it.
        (["报销须知", "发票抬头必须为学校全称，金额须与合同一致，否则不予报销。"], "报销须知\n发票抬头必须为学校全称，金额须与合同一致，否则不予报销。"),
        # Short list lines stay lines.
        (["E100 over-current", "E200 under-voltage"], "E100 over-current\nE200 under-voltage"),
        # English prose wrapped at the margin.
        (["Disconnect both the AC grid and the DC strings before any", "maintenance work on the unit."], "Disconnect both the AC grid and the DC strings before any maintenance work on the unit."),
    ],
)
def test_join_lines(lines, expected):
    full = max(display_width(ln) for ln in lines) if len(lines[0]) > 30 else 60
    assert join_lines(lines, full) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("ＡＢＣ１２３", "ABC123"),
        ("报销金额３０００元，须签订协议；详见第三条：", "报销金额3000元，须签订协议；详见第三条："),
        ("增长３．５％", "增长3.5%"),
        ("（一）报销范围", "（一）报销范围"),
        ("ﬁle ﬂow", "file flow"),
        ("full\u3000width\u00a0space", "full width space"),
        ("soft\u00adhyphen\u200b", "softhyphen"),
        ("⽇期", "日期"),
        ("①②", "①②"),
    ],
)
def test_normalize_chars(raw, expected):
    assert normalize_chars(raw) == expected


def test_clean_end_to_end_on_a_paged_document():
    result = LoadResult(
        "pdf",
        [
            Block("内部规章", "paragraph", 1),
            Block("第 一 章 总 则", "paragraph", 1),
            Block("第三条 报销金额３０００元及以上的需签订协议。协议应当载明服务内容、金额和付款", "paragraph", 1),
            Block("第 1 页", "paragraph", 1),
            Block("内部规章", "paragraph", 2),
            Block("方式，并由经办人签字。", "paragraph", 2),
            Block("第 2 页", "paragraph", 2),
        ],
    )
    blocks = clean(result)
    assert [b.text for b in blocks] == [
        "第一章总则",
        "第三条 报销金额3000元及以上的需签订协议。协议应当载明服务内容、金额和付款方式，并由经办人签字。",
    ]
    # The paragraph continued across the page break: it spans pages 1-2.
    assert (blocks[1].page, blocks[1].page_end) == (1, 2)
