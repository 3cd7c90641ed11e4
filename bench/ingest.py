"""How fast VSM reads PDFs, against plain pypdf text extraction measured in the same run.

    python bench/ingest.py [--files 20] [--pages 10] [--rounds 3] [--ocr-pages 3]

Generates text PDFs (half Chinese regulations, half English manuals) and image-only
scanned pages in a temp dir, then times:
  * VSM ``ingest_file`` as the ingest job runs it (sniff → sandbox child → clean → chunk),
  * VSM without the sandbox (the same code in-process),
  * VSM loading only (no clean/chunk), in-process,
  * pypdf ``PdfReader(...).pages[i].extract_text()`` on the same files (the baseline),
and prints pages/second and the ratios; then seconds per OCR'd page. Rounds are
interleaved and the median is reported, because these machines are noisy.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ZH_ARTICLE = (
    "第{n}条 学校各单位应当严格执行国家和学校的财务管理制度，报销金额3000元及以上的需签订协议，"
    "协议应当载明服务内容、金额和付款方式，并由经办人和负责人签字后方可办理报销手续。"
)
EN_PARAGRAPH = (
    "E{n} over-current: the output current exceeded 150 percent of the rated value for more than "
    "two seconds. Check the load wiring, measure the insulation resistance and restart the inverter."
)


def make_text_pdf(path: Path, pages: int, chinese: bool) -> None:
    import pymupdf

    doc = pymupdf.open()
    n = 0
    for p in range(1, pages + 1):
        page = doc.new_page(width=595, height=842)
        header = "某大学财务处 规章制度汇编" if chinese else "ACME SUN-5K Inverter User Manual"
        page.insert_text((72, 40), header, fontname="china-s" if chinese else "helv", fontsize=9)
        y = 80.0
        title = f"第{p}章 报销管理" if chinese else f"{p} Fault codes"
        page.insert_text((72, y), title, fontname="china-s" if chinese else "helv", fontsize=15)
        y += 30
        while y < 770:
            n += 1
            text = ZH_ARTICLE.format(n=n) if chinese else EN_PARAGRAPH.format(n=100 + n)
            lines = [text[i : i + 38] for i in range(0, len(text), 38)] if chinese else textwrap.wrap(text, 90)
            for line in lines:
                if y > 780:
                    break
                page.insert_text((72, y), line, fontname="china-s" if chinese else "helv", fontsize=10)
                y += 15
            y += 6
        page.insert_text((280, 810), f"第 {p} 页" if chinese else f"Page {p}", fontname="china-s" if chinese else "helv", fontsize=9)
    doc.save(path)
    doc.close()


def make_scanned_pdf(path: Path, pages: int) -> None:
    import pymupdf

    doc = pymupdf.open()
    for p in range(pages):
        src = pymupdf.open()
        page = src.new_page(width=595, height=842)
        y = 90.0
        for n in range(12):
            text = ZH_ARTICLE.format(n=p * 12 + n + 1)
            page.insert_text((60, y), text[:34], fontname="china-s", fontsize=12)
            y += 22
            page.insert_text((60, y), text[34:68], fontname="china-s", fontsize=12)
            y += 34
        pix = page.get_pixmap(dpi=200)
        target = doc.new_page(width=595, height=842)
        target.insert_image(target.rect, pixmap=pix)
        src.close()
    doc.save(path)
    doc.close()


def time_all(files: list[Path], fn) -> float:
    started = time.perf_counter()
    for path in files:
        fn(path)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ocr-pages", type=int, default=3)
    args = parser.parse_args()

    import pypdf

    from domains.engine.config import IngestConfig
    from domains.engine.ingest import ingest_file, load_file

    sandboxed = IngestConfig()
    inline = IngestConfig(sandbox=False)

    def vsm_sandboxed(path: Path) -> None:
        ingest_file(path, sandboxed)

    def vsm_inline(path: Path) -> None:
        ingest_file(path, inline)

    def vsm_load_only(path: Path) -> None:
        load_file(path, inline)

    def plain_pypdf(path: Path) -> None:
        reader = pypdf.PdfReader(path)
        for page in reader.pages:
            page.extract_text()

    with tempfile.TemporaryDirectory(prefix="vsm-bench-") as tmp:
        root = Path(tmp)
        files = []
        for i in range(args.files):
            path = root / f"doc{i:02d}.pdf"
            make_text_pdf(path, args.pages, chinese=i % 2 == 0)
            files.append(path)
        total_pages = args.files * args.pages
        print(f"{args.files} text PDFs x {args.pages} pages = {total_pages} pages "
              f"({sum(f.stat().st_size for f in files) / 1e6:.1f} MB); {os.cpu_count()} CPUs; "
              f"{args.rounds} interleaved rounds, median")
        # Warm-up: imports, font caches, the forkserver.
        vsm_sandboxed(files[0]); vsm_inline(files[0]); plain_pypdf(files[0])

        contenders = {
            "VSM ingest_file, sandboxed (the job's path)": vsm_sandboxed,
            "VSM ingest_file, in-process": vsm_inline,
            "VSM load only, in-process": vsm_load_only,
            "pypdf extract_text (baseline)": plain_pypdf,
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, fn in contenders.items():
                times[name].append(time_all(files, fn))
        base = statistics.median(times["pypdf extract_text (baseline)"])
        print(f"\n{'':46s} {'seconds':>8s} {'pages/s':>9s} {'vs pypdf':>9s}")
        for name, values in times.items():
            secs = statistics.median(values)
            print(f"{name:46s} {secs:8.2f} {total_pages / secs:9.1f} {base / secs:8.2f}x")
        per_file = (statistics.median(times["VSM ingest_file, sandboxed (the job's path)"])
                    - statistics.median(times["VSM ingest_file, in-process"])) / args.files
        print(f"sandbox overhead per file: {per_file:.3f} s (child start, imports, result transfer)")

        if args.ocr_pages:
            scan = root / "scanned.pdf"
            make_scanned_pdf(scan, args.ocr_pages)
            started = time.perf_counter()
            result = ingest_file(scan, sandboxed)
            cold = time.perf_counter() - started
            assert all(p.ocr for p in result.pages)
            ingest_file(scan, inline)  # loads the OCR engine once in this process
            started = time.perf_counter()
            result = ingest_file(scan, inline)
            warm = time.perf_counter() - started
            conf = statistics.mean(p.ocr_confidence or 0 for p in result.pages)
            print(f"\nOCR ({args.ocr_pages} scanned pages at 200 dpi, RapidOCR PP-OCRv4, mean confidence {conf:.3f}):")
            print(f"  sandboxed, engine loaded in the child: {cold / args.ocr_pages:.2f} s per page")
            print(f"  in-process, engine already loaded:     {warm / args.ocr_pages:.2f} s per page")


if __name__ == "__main__":
    main()
