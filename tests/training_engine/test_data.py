"""Label masking, truncation and packing of the training data (no database)."""
from __future__ import annotations

import pytest

from training_app.engine.data import IGNORE, Example, collate, encode_rows, epoch_plan, pack_bins, \
    prompt_ids, question_messages

from .conftest import QA


def _answer_text(tok, ex: Example) -> str:
    return tok.decode([t for t in ex.labels if t != IGNORE])


def _assert_prompt_then_answer(ex: Example):
    """Labels are -100 on a prefix and equal to the ids on the rest."""
    n = next(k for k, t in enumerate(ex.labels) if t != IGNORE)
    assert all(t == IGNORE for t in ex.labels[:n])
    assert ex.labels[n:] == ex.input_ids[n:]
    return n


def test_chat_template_masks_every_prompt_token(tiny_tokenizers):
    tok = tiny_tokenizers["chat"]
    examples, stats = encode_rows("sft", QA, tok, 128)
    assert stats.template == "chat" and stats.examples == len(QA) and stats.span_fallbacks == 0
    for row, ex in zip(QA, examples):
        n = _assert_prompt_then_answer(ex)
        # the masked part is exactly the generation prompt used at inference
        assert ex.input_ids[:n] == prompt_ids(tok, question_messages(row["question"]))
        assert _answer_text(tok, ex) == row["answer"] + "<|im_end|>\n"
        assert tok.decode(ex.input_ids[:n]).endswith("<|im_start|>assistant\n")


def _targets(ex: Example) -> list[list[int]]:
    """The runs of consecutive target positions (each should be one assistant turn)."""
    runs, current = [], []
    for t, label in zip(ex.input_ids, ex.labels):
        if label == IGNORE:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == t  # a target is the token itself
            current.append(t)
    return runs + ([current] if current else [])


def test_a_conversation_trains_every_assistant_turn_and_nothing_else(tiny_tokenizers):
    tok = tiny_tokenizers["chat"]
    row = {"question": QA[1]["question"], "answer": QA[1]["answer"], "system": "你是报销助手。",
           "history": [[QA[0]["question"], QA[0]["answer"]], {"role": "user", "content": "hi"},
                       {"role": "assistant", "content": "hello"}]}
    (ex,), stats = encode_rows("sft", [row], tok, 256)
    assert stats.multi_turn == 1 and stats.span_fallbacks == 0
    # the tokens are exactly the conversation as the chat template renders it
    full = question_messages(row["question"], system=row["system"], history=row["history"]) + [
        {"role": "assistant", "content": row["answer"]}]
    assert ex.input_ids == tok(tok.apply_chat_template(full, tokenize=False), add_special_tokens=False)["input_ids"]
    # three assistant turns are targets, each with its end-of-turn; system, users and role markers are not
    assert [tok.decode(run) for run in _targets(ex)] == [
        QA[0]["answer"] + "<|im_end|>\n", "hello<|im_end|>\n", QA[1]["answer"] + "<|im_end|>\n"]
    masked = tok.decode([t for t, label in zip(ex.input_ids, ex.labels) if label == IGNORE])
    assert "你是报销助手" in masked and QA[0]["question"] in masked and "hi" in masked
    assert masked.count("<|im_start|>assistant") == 3 and QA[0]["answer"] not in masked


def test_sharegpt_messages_rows_and_mask_history(tiny_tokenizers):
    tok = tiny_tokenizers["chat"]
    row = {"messages": [{"from": "human", "value": "E100 是什么？"}, {"from": "gpt", "value": "过流。"},
                        {"role": "user", "content": "怎么处理？"}, {"role": "assistant", "content": "检查电缆。"}]}
    (ex,), _ = encode_rows("sft", [row], tok, 256)
    assert [tok.decode(r) for r in _targets(ex)] == ["过流。<|im_end|>\n", "检查电缆。<|im_end|>\n"]
    # mask_history: the earlier answer is context again, only the last turn is trained
    (last,), stats = encode_rows("sft", [row], tok, 256, mask_history=True)
    assert [tok.decode(r) for r in _targets(last)] == ["检查电缆。<|im_end|>\n"] and stats.multi_turn == 0
    assert last.input_ids == ex.input_ids
    with pytest.raises(ValueError, match="row 0: messages must alternate"):
        encode_rows("sft", [{"messages": [{"role": "user", "content": "a"}]}], tok, 256)


def test_a_long_conversation_is_cut_from_the_left_keeping_the_latest_turns(tiny_tokenizers):
    tok = tiny_tokenizers["chat"]
    history = [[f"问题{i}：" + "报销" * 20, f"回答{i}。"] for i in range(8)]
    (ex,), stats = encode_rows("sft", [{"question": "最后？", "answer": "好的。", "history": history}], tok, 120)
    assert len(ex.input_ids) == 120 and stats.truncated == 1
    assert tok.decode(_targets(ex)[-1]) == "好的。<|im_end|>\n"


def test_plain_template_without_chat_template(tiny_tokenizers):
    tok = tiny_tokenizers["plain"]
    row = {"question": QA[4]["question"], "answer": QA[4]["answer"], "system": "Be brief."}
    (ex,), stats = encode_rows("sft", [row], tok, 256)
    assert stats.template == "plain"
    n = _assert_prompt_then_answer(ex)
    assert tok.decode(ex.input_ids[:n]) == f"Be brief.\n\nQuestion: {QA[4]['question']}\nAnswer:"
    assert _answer_text(tok, ex) == " " + QA[4]["answer"] + "<|endoftext|>"
    assert ex.labels[-1] == tok.eos_token_id
    # a conversation in the plain format: each answer (and its EOS) is a target
    (conv,), _ = encode_rows("sft", [{**row, "history": [["hi", "hello"]]}], tok, 256)
    assert tok.decode(conv.input_ids) == ("Be brief.\n\nQuestion: hi\nAnswer: hello<|endoftext|>\n\n"
                                          f"Question: {QA[4]['question']}\nAnswer: {QA[4]['answer']}<|endoftext|>")
    assert [tok.decode(r) for r in _targets(conv)] == [" hello<|endoftext|>", f" {QA[4]['answer']}<|endoftext|>"]


def test_template_whose_prompt_is_not_a_prefix_locates_the_assistant_span(tiny_tokenizers):
    tok = tiny_tokenizers["chat"]
    saved = tok.chat_template
    # the generation prompt says "assistant:" but a rendered assistant turn says "assistant\n"
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}")
    try:
        (ex,), stats = encode_rows("sft", [QA[0]], tok, 128)
    finally:
        tok.chat_template = saved
    assert stats.span_fallbacks == 1
    _assert_prompt_then_answer(ex)
    assert _answer_text(tok, ex) == QA[0]["answer"] + "<|im_end|>\n"


def test_judge_rows_train_on_the_assistant_turn_only(tiny_tokenizers):
    tok = tiny_tokenizers["chat"]
    verdict = "<think>答案与文档一致。</think>correct"
    row = {"messages": [{"role": "system", "content": "You judge answers."},
                        {"role": "user", "content": "Q: 上限？ A: 500元"},
                        {"role": "assistant", "content": verdict}]}
    (ex,), _ = encode_rows("judge_sft", [row], tok, 256)
    _assert_prompt_then_answer(ex)
    assert _answer_text(tok, ex) == verdict + "<|im_end|>\n"
    sharegpt = {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "ok"}]}
    (ex2,), _ = encode_rows("judge_sft", [sharegpt], tok, 64)
    assert _answer_text(tok, ex2) == "ok<|im_end|>\n"
    with pytest.raises(ValueError, match="row 0: the last message"):
        encode_rows("judge_sft", [{"messages": row["messages"][:2]}], tok, 64)


def test_cpt_trains_on_every_token_and_splits_long_texts(tiny_tokenizers):
    tok = tiny_tokenizers["plain"]
    short = {"text": "会议费报销需要会议通知和签到表。"}
    long = {"text": " ".join(r["question"] + r["answer"] for r in QA)}
    examples, stats = encode_rows("cpt", [short, long], tok, 16)
    assert all(ex.labels == ex.input_ids for ex in examples)
    assert all(len(ex.input_ids) <= 16 for ex in examples)
    assert stats.split == 1 and stats.examples == len(examples) > 2
    whole = [t for ex in examples[1:] for t in ex.input_ids]
    assert tok.decode(whole) == long["text"] + "<|endoftext|>"


def test_truncation_keeps_the_answer_and_counts_cut_and_dropped_rows(tiny_tokenizers):
    tok = tiny_tokenizers["chat"]
    long_q = {"question": "请问 " * 60 + QA[0]["question"], "answer": QA[0]["answer"]}
    huge_a = {"question": "?", "answer": "很长的回答。" * 80}
    examples, stats = encode_rows("sft", [long_q, huge_a, QA[1], {"question": "x", "answer": "  "}], tok, 40)
    assert stats.truncated == 1 and stats.dropped == 2 and stats.examples == 2
    ex = examples[0]
    assert len(ex.input_ids) == 40
    assert _answer_text(tok, ex) == QA[0]["answer"] + "<|im_end|>\n"
    # the prompt lost its beginning, not its end
    assert tok.decode([t for t, l in zip(ex.input_ids, ex.labels) if l == IGNORE]).endswith(
        QA[0]["question"] + "<|im_end|>\n<|im_start|>assistant\n")


def test_bad_rows_name_the_row():
    with pytest.raises(ValueError, match="row 1: sft rows need 'question' and 'answer'"):
        encode_rows("sft", [{"question": "q", "answer": "a"}, {"question": "q"}], _FakeTok(), 32)
    with pytest.raises(ValueError, match="row 0: cpt rows need a 'text'"):
        encode_rows("cpt", [{"question": "q"}], _FakeTok(), 32)


class _FakeTok:
    """Character tokenizer without a chat template: enough for the plain path."""
    chat_template = None
    eos_token_id = 0
    bos_token_id = None

    def get_vocab(self):
        return {}

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) % 50 + 1 for c in text]}


def test_collate_packs_with_restarting_positions_and_per_example_targets():
    a = Example([1, 2, 3, 4], [IGNORE, IGNORE, 3, 4])
    b = Example([5, 6, 7], [5, 6, 7])          # cpt-style: every token labelled
    c = Example([8, 9, 10, 11, 12, 13], [IGNORE] * 4 + [12, 13])
    batch = collate([a, b, c], packing=True, max_length=8, pad_id=0)
    assert batch.attention_mask is None and batch.n_rows == 2 and batch.n_tokens == 13
    rows = batch.input_ids.tolist()
    pos = batch.position_ids.tolist()
    tg = batch.targets.tolist()
    # first-fit decreasing: c (6) then a 1-token pad segment; a (4) + b (3) fill the longest row
    assert rows[0] == [8, 9, 10, 11, 12, 13, 0] and pos[0] == [0, 1, 2, 3, 4, 5, 0]
    assert tg[0] == [IGNORE, IGNORE, IGNORE, 12, 13, IGNORE, IGNORE]
    assert rows[1] == [1, 2, 3, 4, 5, 6, 7] and pos[1] == [0, 1, 2, 3, 0, 1, 2]
    # a's last token does not learn to predict b's first token
    assert tg[1] == [IGNORE, 3, 4, IGNORE, 6, 7, IGNORE]
    assert batch.n_targets == 2 + 2 + 2

    padded = collate([a, b], packing=False, max_length=8, pad_id=0)
    assert padded.position_ids is None
    assert padded.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert padded.targets.tolist() == [[IGNORE, 3, 4, IGNORE], [6, 7, IGNORE, IGNORE]]


def test_pack_bins_and_epoch_plan_are_deterministic():
    assert pack_bins([5, 3, 4, 2, 6], 8) == [[4, 3], [0, 1], [2]]
    p1 = epoch_plan(10, 4, seed=3, epoch=1)
    assert p1 == epoch_plan(10, 4, seed=3, epoch=1)
    assert p1 != epoch_plan(10, 4, seed=3, epoch=2)
    assert sorted(i for mb in p1 for i in mb) == list(range(10)) and [len(mb) for mb in p1] == [4, 4, 2]


@pytest.mark.parametrize("which", ["qwen", "gemma"])
def test_packed_loss_equals_unpacked_and_the_models_own_loss(which, tiny_models, tiny_tokenizers):
    """Same examples, three layouts: one at a time through the model's own forward (full
    logits, HF's loss), padded batch, packed rows. The losses agree, so packing and
    'logits only where labels exist' change speed, not what is learned. The Gemma model
    has a sliding window of 8 and final-logit soft-capping, both crossed here."""
    import torch
    from transformers import AutoModelForCausalLM

    from training_app.engine.sft import batch_loss_sum

    tok = tiny_tokenizers["gemma" if which == "gemma" else "chat"]
    model = AutoModelForCausalLM.from_pretrained(tiny_models[which], dtype=torch.float32).eval()
    examples, _ = encode_rows("sft", QA[:6], tok, 64)
    examples += encode_rows("cpt", [{"text": QA[6]["question"] + QA[6]["answer"]}], tok, 64)[0]
    assert max(len(e.input_ids) for e in examples) > 8  # crosses the sliding window
    with torch.no_grad():
        ref_sum, ref_n = 0.0, 0
        for ex in examples:
            ids = torch.tensor([ex.input_ids])
            out = model(input_ids=ids, labels=torch.tensor([ex.labels]))
            n = ex.n_targets
            ref_sum += float(out.loss) * n
            ref_n += n
        packed = collate(examples, packing=True, max_length=64, pad_id=tok.pad_token_id)
        padded = collate(examples, packing=False, max_length=64, pad_id=tok.pad_token_id)
        assert packed.n_rows < len(examples)  # really packed
        assert packed.input_ids.numel() < padded.input_ids.numel()
        assert packed.n_targets == padded.n_targets == ref_n
        loss_packed = float(batch_loss_sum(model, packed, "cpu"))
        loss_padded = float(batch_loss_sum(model, padded, "cpu"))
    assert loss_packed == pytest.approx(ref_sum, rel=1e-4)
    assert loss_padded == pytest.approx(ref_sum, rel=1e-4)


def test_grounded_rows_teach_answering_from_passages_and_refusing_without_them():
    from datasets_app.engine.formats import QARecord
    from inference_app.engine.answering import NOT_COVERED, grounded_messages
    from inference_app.engine.index import Passage
    from training_app.engine.data import grounded_rows

    records = [QARecord(f"问题{i}？", f"答案{i}。", source_chunk_id=str(i), chunk_text=f"第{i}条 内容{i}。",
                        document="办法.md") for i in range(6)]
    records.append(QARecord("没有出处？", "答案。"))  # no passage: not in the grounded rows
    rows = grounded_rows(records, seed=3)
    answered = [r for r in rows if r["answer"] != NOT_COVERED["zh"]]
    refused = [r for r in rows if r["answer"] == NOT_COVERED["zh"]]
    assert len(answered) == 6 and len(refused) == 2  # every 5th pair also without its passage
    for i, row in enumerate(answered):
        number = int(row["answer"].rsplit("[", 1)[1].rstrip("]"))
        assert row["answer"].startswith(f"答案{i}。")
        assert f"[{number}]（办法.md）第{i}条 内容{i}。" in row["question"]  # the cited passage is its own
        assert row["question"].count("[") == 2 and row["question"].endswith(f"问题{i}？")
    for row in refused:
        assert row["question"].count("[1]") == 1 and "[2]" not in row["question"]
    # Exactly the prompt the chat serves.
    system, user = (m["content"] for m in grounded_messages("问题0？", [Passage("0", "第0条 内容0。", "办法.md")]))
    assert rows[0]["system"] == system
    assert grounded_rows(records, seed=3) == rows and grounded_rows(records[:1]) == []
