"""Builders for the test documents (generated on the fly: no binary fixtures in the repo).

Also hosts the module-level functions the sandbox tests run in a child process (the child
imports them by name, so they cannot live inside a test function).
"""
from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

# A university reimbursement regulation: chapters, articles, a table-free layout, and
# sentences long enough to wrap across lines.
REGULATION = [
    ("第一章 总则", [
        "第一条 为规范学校经费报销管理，提高资金使用效益，根据国家有关财务制度，结合学校实际，制定本办法。",
        "第二条 本办法适用于学校各学院、各部门及全体教职工使用各类经费发生的报销业务。",
        "第三条 报销金额3000元及以上的需签订协议。协议应当载明服务内容、金额和付款方式，并由经办人和负责人签字。",
        "第四条 报销人应当对报销内容的真实性、合法性负责，不得虚报、冒领。",
    ]),
    ("第二章 差旅费", [
        "第五条 教职工因公出差，应当事先履行审批手续，出差审批单作为报销依据。",
        "第六条 城市间交通费按照乘坐交通工具的等级凭据报销，乘坐飞机应当选择经济舱。",
        "第七条 住宿费在规定标准内凭发票据实报销，超出标准部分由个人承担。",
    ]),
    ("第三章 附则", [
        "第八条 本办法由财务处负责解释。",
        "第九条 本办法自发布之日起施行，原有规定与本办法不一致的，以本办法为准。",
    ]),
]
REGULATION_TITLE = "某大学经费报销管理办法"

MANUAL_SECTIONS = [
    ("1 Safety", [
        "Read this manual before installing the inverter. Only qualified electricians may open the cover.",
        "Disconnect both the AC grid and the DC strings before any maintenance work on the unit.",
    ]),
    ("2 Fault codes", [
        "E100 over-current: the output current exceeded 150 percent of the rated value. Check the load wiring and restart the inverter.",
        "E200 under-voltage: the DC input voltage fell below the minimum operating voltage. Check the PV string connections.",
        "E300 over-temperature: the heat sink is hotter than 85 degrees. Clean the air inlets and improve ventilation.",
    ]),
]

SCANNED_SENTENCE = "第三条 报销金额3000元及以上的需签订协议。"


def _wrap(text: str, width: int) -> list[str]:
    """Hard-wrap text at ``width`` characters, as a PDF page would."""
    return [text[i : i + width] for i in range(0, len(text), width)] or [""]


def regulation_pdf(path: Path, *, pages_per_chapter: int = 1) -> Path:
    """A Chinese regulation over several pages with a running header and page numbers."""
    import pymupdf

    doc = pymupdf.open()
    chapters = list(REGULATION)
    total = len(chapters) * pages_per_chapter
    number = 0
    for c, (chapter, articles) in enumerate(chapters):
        for part in range(pages_per_chapter):
            number += 1
            page = doc.new_page(width=595, height=842)
            page.insert_text((72, 40), "某大学财务处 内部规章制度汇编", fontname="china-s", fontsize=9)
            y = 90.0
            if c == 0 and part == 0:
                page.insert_text((150, y), REGULATION_TITLE, fontname="china-s", fontsize=18)
                y += 40
            if part == 0:
                page.insert_text((72, y), chapter, fontname="china-s", fontsize=15)
                y += 32
            share = articles if pages_per_chapter == 1 else articles[part::pages_per_chapter]
            for article in share:
                for line in _wrap(article, 36):
                    page.insert_text((72, y), line, fontname="china-s", fontsize=11)
                    y += 17
                y += 8
            page.insert_text((280, 810), f"第 {number} 页 共 {total} 页", fontname="china-s", fontsize=9)
    doc.save(path)
    doc.close()
    return path


def manual_pdf(path: Path) -> Path:
    """An English inverter manual with headings, wrapped paragraphs and a ruled fault-code table."""
    import textwrap

    import pymupdf

    doc = pymupdf.open()
    for n, (heading, paragraphs) in enumerate(MANUAL_SECTIONS, start=1):
        page = doc.new_page(width=595, height=842)
        page.insert_text((72, 40), "ACME SUN-5K Inverter User Manual", fontsize=8)
        page.insert_text((72, 90), heading, fontsize=16)
        y = 125.0
        for para in paragraphs:
            for line in textwrap.wrap(para, 80):
                page.insert_text((72, y), line, fontsize=10)
                y += 14
            y += 10
        if n == 2:
            rows = [["Code", "Meaning", "Action"], ["E100", "Over-current", "Check wiring"], ["E200", "Under-voltage", "Check strings"]]
            y += 10
            for i, row in enumerate(rows):
                for j, cell in enumerate(row):
                    rect = pymupdf.Rect(72 + j * 150, y + i * 20, 72 + (j + 1) * 150, y + (i + 1) * 20)
                    page.draw_rect(rect, color=(0, 0, 0), width=0.8)
                    page.insert_text((rect.x0 + 4, rect.y1 - 6), cell, fontsize=10)
        page.insert_text((290, 810), f"Page {n} of {len(MANUAL_SECTIONS)}", fontsize=8)
    doc.save(path)
    doc.close()
    return path


def _scanned_page(doc, lines: list[str], dpi: int = 200) -> None:
    """Append an image-only page showing ``lines`` (what a scanner produces)."""
    import pymupdf

    src = pymupdf.open()
    page = src.new_page(width=595, height=842)
    y = 100.0
    for line in lines:
        page.insert_text((72, y), line, fontname="china-s", fontsize=14)
        y += 30
    pix = page.get_pixmap(dpi=dpi)
    target = doc.new_page(width=595, height=842)
    target.insert_image(target.rect, pixmap=pix)
    src.close()


def scanned_pdf(path: Path) -> Path:
    """One image-only page carrying SCANNED_SENTENCE."""
    import pymupdf

    doc = pymupdf.open()
    _scanned_page(doc, ["第一章 总则", SCANNED_SENTENCE])
    doc.save(path)
    doc.close()
    return path


def mixed_pdf(path: Path) -> Path:
    """Page 1 has a text layer; page 2 is a scan."""
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_text((72, 100), "第一条 为规范学校经费报销管理，制定本办法。", fontname="china-s", fontsize=12)
    page.insert_text((72, 130), "第二条 本办法适用于学校各学院、各部门。", fontname="china-s", fontsize=12)
    _scanned_page(doc, [SCANNED_SENTENCE])
    doc.save(path)
    doc.close()
    return path


def encrypted_pdf(path: Path) -> Path:
    import pymupdf

    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret payroll", fontsize=12)
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="user-pass", owner_pw="owner-pass")
    doc.close()
    return path


def regulation_docx(path: Path) -> Path:
    """A Word document with heading styles, body paragraphs and a table with a merged cell."""
    import docx

    document = docx.Document()
    document.add_heading(REGULATION_TITLE, level=0)
    for chapter, articles in REGULATION[:2]:
        document.add_heading(chapter, level=1)
        for article in articles:
            document.add_paragraph(article)
    document.add_heading("报销标准", level=2)
    table = document.add_table(rows=3, cols=3)
    cells = [["级别", "住宿费", "伙食补助"], ["教授", "500元", "100元"], ["其他人员", "350元", "100元"]]
    for r, row in enumerate(cells):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.save(path)
    return path


def zip_bomb_docx(path: Path, zeros: int = 20 * 1024 * 1024) -> Path:
    """A valid-looking DOCX whose document.xml inflates ~1000:1 (megabytes of zeros)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>')
        zf.writestr("_rels/.rels", '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"/>')
        with zf.open("word/document.xml", "w", force_zip64=True) as fh:
            block = b"0" * (1024 * 1024)
            for _ in range(zeros // len(block)):
                fh.write(block)
    return path


def png_bytes() -> bytes:
    """A tiny valid PNG (1×1 white pixel)."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"\x00\xff\xff\xff"
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def docx_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


# ---------------------------------------------------------------- sandbox targets


def sleepy_loader(seconds: float, on_page=None) -> str:
    """Stands in for a parser that hangs on a crafted PDF."""
    time.sleep(seconds)
    return "finished"


def hungry_loader(megabytes: int) -> int:
    """Stands in for a parser that allocates without bound."""
    data = bytearray(megabytes * 1024 * 1024)
    return len(data)


def paged_loader(pages: int, on_page=None) -> list[int]:
    """Reports progress page by page, like load_pdf does."""
    seen = []
    for n in range(1, pages + 1):
        time.sleep(0.01)
        seen.append(n)
        if on_page:
            on_page(n, pages)
    return seen


def stalling_loader(on_page=None) -> str:
    """Finishes one page, then hangs on the second (for the idle timeout)."""
    if on_page:
        on_page(1, 3)
    time.sleep(60)
    return "never"


def failing_loader() -> None:
    from domains.engine.errors import CorruptFile

    raise CorruptFile("page 7 is garbage")


def crashing_loader() -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def buffer_of(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def fork_server_facts() -> dict:
    """Seen from a sandbox child: its parent (the fork server) and what it preloaded."""
    import os
    import sys

    parent = os.getppid()
    return {
        "server_threads": len(os.listdir(f"/proc/{parent}/task")),
        "pymupdf_preloaded": "pymupdf" in sys.modules,
        "optional_extras": [m for m in ("pymupdf4llm", "numpy") if sys.modules.get(m) is not None],
    }
