"""Exporters/importers: exact round trips, LLaMA-Factory registry keys, upload error cases."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from datasets_app.engine.formats import (
    EntityRecord,
    EntitySpan,
    FormatError,
    ImportConfig,
    QARecord,
    RetrievalRecord,
    export_alpaca,
    export_cluener,
    export_flagembedding,
    export_qa_jsonl,
    export_sentence_transformers,
    export_sharegpt,
    import_alpaca,
    import_cluener,
    import_flagembedding,
    import_qa,
    import_sentence_transformers,
    import_sharegpt,
    llamafactory_dataset_info,
    write_atomic,
)

CLUENER_DEV = Path("/work/shared/benchmarks/cluener_dev.jsonl")

QA = [
    QARecord("差旅费报销需要哪些材料？", "发票原件、行程单和审批单。", "c1", "第三条 差旅费……", "报销办法", ("第二章", "差旅"), system="你是财务助手。"),
    QARecord("How long is the deadline?", "30 days after the trip.", "c2", "Claims within 30 days.", "rules", history=(("hi", "hello"),)),
    QARecord('Quotes "and" \\ backslashes\nnewline?', "Yes,\tтабы и emoji 🐖.", None),
]

RET = [
    RetrievalRecord("母猪产前多久转入产房？", "c1", "产前7天转入产房。", (("c8", "断奶后配种。"), ("c9", "仔猪补铁。")), 0.9),
    RetrievalRecord("fault E21", "c2", "E21: grid overvoltage, check the DC bus", (("c3", "E22: undervoltage"),), 1.0),
]


def _qa_fields(r: QARecord, *fields: str) -> tuple:
    return tuple(getattr(r, f) for f in fields)


@pytest.mark.parametrize("with_context", [False, True])
def test_alpaca_round_trip(with_context):
    text = export_alpaca(QA, with_context=with_context)
    rows = [json.loads(line) for line in text.splitlines()]
    assert set(rows[0]) == {"instruction", "input", "output", "system", "history"}
    res = import_alpaca(text)
    assert res.ok
    fields = ["question", "answer", "system", "history"] + (["chunk_text"] if with_context else [])
    assert [_qa_fields(r, *fields) for r in res.records] == [_qa_fields(r, *fields) for r in QA]


def test_alpaca_omits_system_and_history_when_unused():
    rows = [json.loads(line) for line in export_alpaca([QARecord("q", "a")]).splitlines()]
    assert rows == [{"instruction": "q", "input": "", "output": "a"}]


@pytest.mark.parametrize("with_context", [False, True])
def test_sharegpt_round_trip(with_context):
    text = export_sharegpt(QA, with_context=with_context)
    first = json.loads(text.splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    res = import_sharegpt(text)
    assert res.ok
    fields = ["question", "answer", "system", "history"] + (["chunk_text"] if with_context else [])
    assert [_qa_fields(r, *fields) for r in res.records] == [_qa_fields(r, *fields) for r in QA]


def test_sharegpt_bad_rows_are_reported_by_line():
    text = "\n".join(
        [
            json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}),
            json.dumps({"messages": [{"role": "assistant", "content": "a"}]}),
            "{not json",
        ]
    )
    res = import_sharegpt(text)
    assert len(res.records) == 1
    assert [e.line for e in res.errors] == [2, 3]


def test_llamafactory_dataset_info_keys():
    share = llamafactory_dataset_info("vsm_qa", "qa.sharegpt.jsonl")
    assert share == {
        "vsm_qa": {
            "file_name": "qa.sharegpt.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    }
    alpaca = llamafactory_dataset_info("vsm_alpaca", "qa.alpaca.jsonl", formatting="alpaca")["vsm_alpaca"]
    assert alpaca["columns"] == {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}
    # The column names declared are the keys our exporter writes.
    row = json.loads(export_alpaca(QA[:1]).splitlines()[0])
    assert set(alpaca["columns"].values()) <= set(row)
    with pytest.raises(FormatError):
        llamafactory_dataset_info("x", "x.jsonl", formatting="oops")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_sentence_transformers_round_trips(fmt):
    pairs = import_sentence_transformers(export_sentence_transformers(RET, "pairs", fmt=fmt), "pairs", fmt=fmt)
    assert [(r.query, r.positive_text) for r in pairs.records] == [(r.query, r.positive_text) for r in RET]

    trip_text = export_sentence_transformers(RET, "triplets", fmt=fmt)
    assert len(trip_text.strip().splitlines()) == 3 + (1 if fmt == "csv" else 0)
    trips = import_sentence_transformers(trip_text, "triplets", fmt=fmt)
    assert [(r.query, r.positive_text, [t for _, t in r.negatives]) for r in trips.records] == [
        (r.query, r.positive_text, [t for _, t in r.negatives]) for r in RET
    ]

    scored = import_sentence_transformers(export_sentence_transformers(RET, "scored", fmt=fmt), "scored", fmt=fmt)
    assert [(r.query, r.positive_text, r.score) for r in scored.records] == [
        (r.query, r.positive_text, r.score) for r in RET
    ]
    assert pairs.ok and trips.ok and scored.ok


def test_sentence_transformers_columns_and_errors():
    row = json.loads(export_sentence_transformers(RET, "triplets").splitlines()[0])
    assert list(row) == ["anchor", "positive", "negative"]
    with pytest.raises(FormatError):
        export_sentence_transformers([RetrievalRecord("q", "c", "p")], "scored")
    res = import_sentence_transformers('{"sentence1": "a", "sentence2": "b", "score": "x"}\n', "scored")
    assert res.errors[0].line == 1 and "score" in res.errors[0].reason
    assert import_sentence_transformers("anchor,other\nq,p\n", "pairs", fmt="csv").file_error


def test_flagembedding_round_trip():
    text = export_flagembedding(RET, prompt="为这个句子生成表示以用于检索相关文章：")
    row = json.loads(text.splitlines()[0])
    assert set(row) == {"query", "pos", "neg", "pos_scores", "prompt"}
    assert isinstance(row["pos"], list) and isinstance(row["neg"], list)
    res = import_flagembedding(text)
    assert res.ok
    assert [(r.query, r.positive_text, [t for _, t in r.negatives], r.score) for r in res.records] == [
        (r.query, r.positive_text, [t for _, t in r.negatives], r.score) for r in RET
    ]
    bad = import_flagembedding('{"query": "q", "pos": "not a list"}\n{"query": "q", "pos": ["p"]}\n')
    assert len(bad.records) == 1 and bad.errors[0].line == 1


def test_cluener_round_trip_small_and_bad_span():
    rec = EntityRecord("彭小军认为台湾", (EntitySpan("name", 0, 2, "彭小军"), EntitySpan("address", 5, 6, "台湾")))
    res = import_cluener(export_cluener([rec]))
    assert res.records == (rec,)
    assert rec.entities == {"name": [[0, 2]], "address": [[5, 6]]}
    with pytest.raises(FormatError):
        export_cluener([EntityRecord("abc", (EntitySpan("x", 0, 1, "bc"),))])
    bad = import_cluener('{"text": "abc", "label": {"x": {"bc": [[0, 1]]}}}\n')
    assert bad.errors and bad.errors[0].line == 1


@pytest.mark.skipif(not CLUENER_DEV.exists(), reason="shared benchmark data not present")
def test_cluener_dev_real_file_round_trip():
    raw = CLUENER_DEV.read_text(encoding="utf-8")
    res = import_cluener(raw)
    assert res.ok and len(res.records) == 1343
    assert sum(len(r.spans) for r in res.records) > 2000
    again = export_cluener(res.records)
    assert [json.loads(x) for x in again.splitlines()] == [json.loads(x) for x in raw.splitlines() if x.strip()]
    assert import_cluener(again).records == res.records
    assert again == raw  # byte-exact: same key order, separators and span order


def test_write_atomic(tmp_path):
    p = write_atomic(tmp_path / "sub" / "qa.jsonl", export_qa_jsonl(QA))
    assert p.read_text(encoding="utf-8") == export_qa_jsonl(QA)
    assert [x.name for x in p.parent.iterdir()] == ["qa.jsonl"]


# ---------------------------------------------------------------- QA uploads


def test_qa_jsonl_lossless_round_trip():
    res = import_qa(export_qa_jsonl(QA).encode(), "qa.jsonl")
    assert res.ok
    assert res.records == tuple(QA)


def test_jsonl_survives_unicode_line_separators():
    tricky = [QARecord("line\u2028sep\u0085next?", "para\u2029graph")]
    assert import_qa(export_qa_jsonl(tricky).encode(), "qa.jsonl").records == tuple(tricky)
    assert import_alpaca(export_alpaca(tricky)).records[0].question == tricky[0].question


def test_qa_json_array_with_line_numbers():
    text = '[\n  {"question": "q1", "answer": "a1"},\n  {"question": "q2", "answer": ""},\n  {"question": "q3", "answer": "a3"}\n]\n'
    res = import_qa(text.encode(), "qa.json")
    assert [r.question for r in res.records] == ["q1", "q3"]
    assert [(e.line, e.reason) for e in res.errors] == [(3, "empty answer")]
    broken = import_qa(b'[{"question": "q1", "answer": "a1"},\n {"question": oops}]', "qa.json")
    assert [r.question for r in broken.records] == ["q1"] and broken.errors[0].line == 2


def test_damaged_utf8_is_reported_not_read_as_gbk():
    good = "问题,答案\n差旅费怎么报销？,凭发票原件报销，三十日内提交。\n".encode()
    damaged = good[:20] + good[21:]  # one byte of a 3-byte character lost
    res = import_qa(damaged, "qa.csv")
    assert res.file_error and "UTF-8" in res.file_error and "byte" in res.file_error


def test_qa_csv_english_headers_utf8():
    data = b"question,answer,document,heading_path,tags,held_out\nQ1,A1,doc,Ch1 > 1.2,\"a,b\",yes\nQ2,A2,,,,\n"
    res = import_qa(data, "qa.csv")
    assert res.ok
    assert res.records[0] == QARecord("Q1", "A1", None, "", "doc", ("Ch1", "1.2"), True, ("a", "b"))
    assert res.records[1] == QARecord("Q2", "A2")


def test_qa_csv_chinese_headers_gbk_and_bom():
    text = "问题,答案,来源\n差旅费怎么报销？,凭发票报销。,报销办法\n"
    gbk = import_qa(text.encode("gbk"), "问答.csv")
    bom = import_qa(b"\xef\xbb\xbf" + text.encode("utf-8"), "qa.csv")
    expected = (QARecord("差旅费怎么报销？", "凭发票报销。", document="报销办法"),)
    assert gbk.ok and gbk.records == expected
    assert bom.ok and bom.records == expected


def test_qa_csv_row_errors_have_line_numbers():
    data = (
        "question,answer\n"
        "ok?,yes\n"
        "no answer?,\n"
        ',"multi\nline answer"\n'
        f"long?,{'x' * 50}\n"
    ).encode()
    res = import_qa(data, "qa.csv", ImportConfig(max_answer_chars=20))
    assert [r.question for r in res.records] == ["ok?"]
    assert [(e.line, e.reason.split(" ")[0]) for e in res.errors] == [(3, "empty"), (4, "empty"), (6, "answer")]
    assert "empty answer" in res.errors[0].reason and "question" in res.errors[1].reason
    assert "too long" in res.errors[2].reason


def test_qa_csv_missing_column_is_a_file_error():
    res = import_qa("问题,备注\nq,n\n".encode(), "qa.csv")
    assert res.records == () and "answer" in res.file_error and "答案" in res.file_error


def test_qa_garbled_and_unsupported_files():
    garbled = import_qa(bytes(range(256)) * 4, "qa.csv")
    assert garbled.file_error and not garbled.records
    assert import_qa(b"\x80\x81\xfe\xff" * 50, "qa.csv").file_error
    assert import_qa(b"\xff\xfe\xfd" * 100, "qa.jsonl").file_error
    assert "unsupported" in import_qa(b"%PDF-1.7", "qa.pdf").file_error
    assert import_qa(b"PK\x03\x04junk", "qa.csv").file_error
    assert "zip" in import_qa(b"not a zip at all", "qa.xlsx").file_error


def test_qa_jsonl_bad_line_and_wrong_types():
    lines = [
        json.dumps({"question": "q1", "answer": "a1"}),
        "{oops",
        json.dumps({"问题": "q3", "答案": 42}),
        json.dumps({"question": "q4"}),
        "",
        json.dumps(["q", "a"]),
        json.dumps({"问题": "问五", "答案": "答五", "标签": ["x"], "留出": True}),
    ]
    res = import_qa("\n".join(lines).encode(), "qa.jsonl")
    assert [r.question for r in res.records] == ["q1", "问五"]
    assert res.records[1].tags == ("x",) and res.records[1].held_out
    assert [e.line for e in res.errors] == [2, 3, 4, 6]
    assert "bad JSON" in res.errors[0].reason
    assert "int" in res.errors[1].reason
    assert "answer" in res.errors[2].reason
    assert import_qa(b"not json\nat all\n", "qa.jsonl").file_error


def _xlsx(rows) -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    for r in rows:
        ws.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def test_qa_xlsx_import_and_errors():
    data = _xlsx([["问题", "答案", "留出"], ["发票丢了怎么办？", "写情况说明。", "是"], ["数字答案？", 42, None], ["空答案", None, None], ["bad", "x", "maybe"]])
    res = import_qa(data, "qa.xlsx")
    assert res.records == (
        QARecord("发票丢了怎么办？", "写情况说明。", held_out=True),
        QARecord("数字答案？", "42"),
    )
    assert (res.errors[0].line, res.errors[0].reason) == (4, "empty answer")
    assert res.errors[1].line == 5 and "held_out" in res.errors[1].reason
    assert "missing" in import_qa(_xlsx([["a", "b"], ["1", "2"]]), "qa.xlsx").file_error


def test_qa_xlsx_header_below_blank_rows_keeps_excel_row_numbers():
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws["A3"], ws["B3"] = "Question", "Answer"
    ws["A5"], ws["B5"] = "q5", "a5"
    ws["A6"] = "q6"
    buf = io.BytesIO()
    wb.save(buf)
    res = import_qa(buf.getvalue(), "qa.xlsx")
    assert res.records == (QARecord("q5", "a5"),)
    assert [(e.line, e.reason) for e in res.errors] == [(6, "empty answer")]


def test_qa_xlsx_zip_bomb_refused_before_inflating():
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("xl/workbook.xml", "<workbook/>")
        zf.writestr("xl/worksheets/sheet1.xml", b"\0" * 5_000_000)
    res = import_qa(buf.getvalue(), "qa.xlsx")
    assert res.file_error and "compressed" in res.file_error
    truncated = _xlsx([["question", "answer"], ["q", "a"]])[:-200]
    assert import_qa(truncated, "qa.xlsx").file_error


def test_qa_csv_oversize_cell_is_a_row_error_not_a_crash():
    huge = "x" * 200_000  # beyond csv's default field size limit
    data = f'question,answer\nq1,a1\nq2,"{huge}"\nq3,a3\n'.encode()
    res = import_qa(data, "qa.csv")
    assert [r.question for r in res.records] == ["q1", "q3"]
    assert len(res.errors) == 1 and res.errors[0].line == 3


def test_qa_tsv_and_crlf():
    res = import_qa("问题\t答案\r\n问一\t答一\r\n".encode(), "qa.tsv")
    assert res.ok and res.records == (QARecord("问一", "答一"),)


@pytest.mark.parametrize("name", ["qa.csv", "qa.jsonl", "qa.xlsx"])
def test_qa_import_never_raises_on_random_bytes(name):
    import random

    rng = random.Random(name)
    for n in (0, 1, 7, 300, 5000):
        res = import_qa(bytes(rng.randrange(256) for _ in range(n)), name)
        assert res.file_error or not res.records
