"""Word, Markdown, HTML and plain text: structure kept, encodings read, bombs and binaries refused."""
from __future__ import annotations

import zipfile

import pytest

from domains.engine.config import IngestConfig
from domains.engine.errors import CorruptFile, UnsupportedType, ZipBomb
from domains.engine.ingest import ingest_file
from domains.engine.loaders import load
from domains.engine.zipcheck import check_zip

from . import docs


def test_docx_heading_styles_and_table(corpus, inline_config):
    result = ingest_file(corpus["regulation.docx"], inline_config)
    assert result.kind == "docx"
    assert result.pages == []
    headings = [(b.text, b.level) for b in result.blocks if b.kind == "heading"]
    assert headings == [(docs.REGULATION_TITLE, 1), ("第一章 总则", 2), ("第二章 差旅费", 2), ("报销标准", 3)]
    rows = [b for b in result.blocks if b.kind == "table_row"]
    assert [r.text for r in rows] == ["级别 | 住宿费 | 伙食补助", "教授 | 500元 | 100元", "其他人员 | 350元 | 100元"]
    assert rows[0].heading_path == (docs.REGULATION_TITLE, "第二章 差旅费", "报销标准")
    third = next(b for b in result.blocks if b.text.startswith("第三条"))
    assert third.heading_path == (docs.REGULATION_TITLE, "第一章 总则")
    chunk = next(c for c in result.chunks if "第三条" in c.text)
    assert chunk.heading_path == (docs.REGULATION_TITLE, "第一章 总则")


def test_docx_merged_cell_appears_once(tmp_path, inline_config):
    import docx

    document = docx.Document()
    table = document.add_table(rows=2, cols=3)
    table.cell(0, 0).merge(table.cell(0, 2)).text = "故障代码表"
    for c, value in enumerate(["E100", "过流", "检查接线"]):
        table.cell(1, c).text = value
    path = tmp_path / "merged.docx"
    document.save(path)
    result = load(path, "docx", inline_config)
    assert [b.text for b in result.blocks] == ["故障代码表", "E100 | 过流 | 检查接线"]


def test_zip_bomb_docx_refused_before_inflating(tmp_path):
    path = docs.zip_bomb_docx(tmp_path / "bomb.docx", zeros=20 * 1024 * 1024)
    assert path.stat().st_size < 100_000  # 20 MB of zeros deflate to ~20 KB
    with pytest.raises(ZipBomb, match="compressed .*:1"):
        ingest_file(path, IngestConfig(sandbox=False))


@pytest.mark.parametrize(
    "limits, words",
    [
        (dict(max_entries=2), "entries"),
        (dict(max_entry_bytes=1024 * 1024), "would inflate to"),
        (dict(max_total_bytes=5 * 1024 * 1024, max_entry_bytes=10**9, max_ratio=10**6), "more than"),
    ],
)
def test_zip_limits(tmp_path, limits, words):
    path = docs.zip_bomb_docx(tmp_path / "bomb.docx", zeros=8 * 1024 * 1024)
    settings = dict(max_entries=100, max_entry_bytes=10**9, max_total_bytes=10**10, max_ratio=10**6)
    settings.update(limits)
    with pytest.raises(ZipBomb, match=words):
        check_zip(path, **settings)


def test_normal_docx_passes_the_zip_check(corpus):
    names = check_zip(corpus["regulation.docx"], max_entries=100, max_entry_bytes=10**7, max_total_bytes=10**8, max_ratio=200)
    assert "word/document.xml" in names


def test_damaged_docx(tmp_path, inline_config):
    path = tmp_path / "broken.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", "<w:document><unclosed>")
    with pytest.raises(CorruptFile, match="damaged"):
        ingest_file(path, inline_config)


MARKDOWN = """---
title: front matter is dropped
---
# 猪场消毒规程

## 一、人员进场

进场人员必须淋浴更衣，
更换场内工作服。

| 区域 | 频次 |
|---|---|
| 猪舍 | 每周两次 |

## Fault codes

E100 means *over-current*.
Check the **wiring**.

```
code stays as written
```
"""


def test_markdown_structure(tmp_path, inline_config):
    path = tmp_path / "guide.md"
    path.write_text(MARKDOWN, encoding="utf-8")
    result = ingest_file(path, inline_config)
    assert result.kind == "markdown"
    blocks = [(b.kind, b.text, b.heading_path) for b in result.blocks]
    assert blocks == [
        ("heading", "猪场消毒规程", ("猪场消毒规程",)),
        ("heading", "一、人员进场", ("猪场消毒规程", "一、人员进场")),
        # A soft line break inside Chinese text joins without a space.
        ("paragraph", "进场人员必须淋浴更衣，更换场内工作服。", ("猪场消毒规程", "一、人员进场")),
        ("table_row", "区域 | 频次", ("猪场消毒规程", "一、人员进场")),
        ("table_row", "猪舍 | 每周两次", ("猪场消毒规程", "一、人员进场")),
        ("heading", "Fault codes", ("猪场消毒规程", "Fault codes")),
        ("paragraph", "E100 means over-current. Check the wiring.", ("猪场消毒规程", "Fault codes")),
        ("code", "code stays as written", ("猪场消毒规程", "Fault codes")),
    ]
    assert "front matter" not in result.text


HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>逆变器手册</title>
<style>p { color: red }</style><script>var secret = 1;</script></head>
<body>
<nav>Home | Products | About</nav>
<h1>故障代码</h1>
<p>E100 表示<b>过流</b>。请检查
接线。</p>
<div>裸文本段落<br>第二行</div>
<table><tr><th>代码</th><th>含义</th></tr><tr><td>E100</td><td>过流</td></tr></table>
<h2>维护</h2>
<ul><li>清洁进风口</li><li>检查风扇</li></ul>
<footer>Copyright ACME</footer>
</body></html>
"""


def test_html_structure(tmp_path, inline_config):
    path = tmp_path / "manual.html"
    path.write_text(HTML, encoding="utf-8")
    result = ingest_file(path, inline_config)
    assert result.kind == "html"
    assert result.meta["title"] == "逆变器手册"
    blocks = [(b.kind, b.text, b.heading_path) for b in result.blocks]
    assert blocks == [
        ("heading", "故障代码", ("故障代码",)),
        ("paragraph", "E100 表示过流。请检查接线。", ("故障代码",)),
        ("paragraph", "裸文本段落\n第二行", ("故障代码",)),
        ("table_row", "代码 | 含义", ("故障代码",)),
        ("table_row", "E100 | 过流", ("故障代码",)),
        ("heading", "维护", ("故障代码", "维护")),
        ("paragraph", "清洁进风口", ("故障代码", "维护")),
        ("paragraph", "检查风扇", ("故障代码", "维护")),
    ]
    for dropped in ("secret", "color", "Products", "Copyright"):
        assert dropped not in result.text


TEXT = "第一章 总则\n第一条 为规范学校经费报销管理，提高资金使用效益，根据国家有关财务\n制度，结合学校实际，制定本办法。\n第二条 本办法适用于全校。\n\n第二章 附则\n第三条 本办法自发布之日起施行。\n"


@pytest.mark.parametrize(
    "encode, encoding",
    [
        (lambda t: t.encode("gbk"), "gb18030"),
        (lambda t: b"\xef\xbb\xbf" + t.encode("utf-8"), "utf-8-sig"),
        (lambda t: t.encode("utf-8"), "utf-8"),
        (lambda t: t.replace("\n", "\r\n").encode("gb18030"), "gb18030"),
    ],
    ids=["gbk", "utf8-bom", "utf8", "gb18030-crlf"],
)
def test_plain_text_encodings(tmp_path, inline_config, encode, encoding):
    path = tmp_path / "rules.txt"
    path.write_bytes(encode(TEXT))
    result = ingest_file(path, inline_config)
    assert result.kind == "text"
    assert result.meta["encoding"] == encoding
    assert "根据国家有关财务制度，结合学校实际，制定本办法。" in result.text  # wrapped line rejoined
    assert not result.text.startswith("\ufeff")
    # Chapters are chunked apart; the lone article of chapter two is its whole address.
    assert [c.heading_path for c in result.chunks] == [("第一章 总则",), ("第二章 附则", "第三条")]


def test_text_form_feeds_are_pages(tmp_path, inline_config):
    path = tmp_path / "pdftotext.txt"
    path.write_text("Page one has this sentence.\fPage two has another one.\f", encoding="utf-8")
    result = ingest_file(path, inline_config)
    assert [p.number for p in result.pages] == [1, 2]
    assert [(b.text, b.page) for b in result.blocks] == [("Page one has this sentence.", 1), ("Page two has another one.", 2)]


def test_binary_named_txt(tmp_path, inline_config):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"MZ\x90\x00\x03\x00\x00\x00" + bytes(range(256)) * 8)
    with pytest.raises(UnsupportedType, match="binary"):
        ingest_file(path, inline_config)


def test_binary_hidden_after_a_text_head(tmp_path, inline_config):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"looks like text at first\n" * 3000 + bytes(range(256)) * 40)
    with pytest.raises(UnsupportedType, match="binary"):
        ingest_file(path, inline_config)
