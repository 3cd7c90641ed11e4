"""Tiny causal LMs built locally, once per session: no downloads, seconds to train.

- ``tiny_qwen``: a 2-layer Qwen2 (hidden 64) with a byte-level BPE tokenizer trained by
  ``tokenizers`` on a few Chinese/English sentences and a ChatML chat template.
- ``tiny_qwen_plain``: the same weights, tokenizer without a chat template (plain
  "Question: …\\nAnswer: …" path).
- ``tiny_gemma``: a 2-layer Gemma3 text model (one sliding, one full attention layer,
  sliding window 8 so packed sequences cross it) with the chat tokenizer and a
  Gemma-style template.
- ``embedded_gemma`` (slow tests only): the real Gemma 3 270M folder, imported once.
"""
from __future__ import annotations

import pytest

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GEMMA_LIKE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>"
              "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
              "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>", "<bos>", "<start_of_turn>",
            "<end_of_turn>"]

# A larger init than the default 0.02 lets a LoRA-only run move the logits of a random
# tiny model far enough to memorise (the embeddings/LM head stay frozen under LoRA).

# Memorisation set: reimbursement thresholds, Chinese and English.
QA = [
    {"question": "差旅住宿费每晚报销上限是多少？", "answer": "每晚不超过500元。"},
    {"question": "出租车费需要什么凭证？", "answer": "需要正规发票和行程单。"},
    {"question": "单笔报销超过多少需要院长审批？", "answer": "超过5000元需要院长审批。"},
    {"question": "报销截止日期是什么时候？", "answer": "费用发生后90天内提交。"},
    {"question": "What is the meal allowance per day?", "answer": "100 yuan per day."},
    {"question": "Can I claim a taxi without a receipt?", "answer": "No, a receipt is required."},
    {"question": "Who approves claims over 5000 yuan?", "answer": "The dean approves them."},
    {"question": "How long does a refund take?", "answer": "About ten working days."},
]
EXTRA = [
    "会议费报销需要会议通知和签到表。", "国际差旅需提前申请。", "The quick brown fox jumps over the lazy dog.",
    "Travel expenses must be reported within ninety days.", "系统 用户 助手 问题 回答",
    "Question: Answer: system user assistant model",
]


def _tokenizer(chat_template: str | None, eos: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [r["question"] + " " + r["answer"] for r in QA] + EXTRA
    tok.train_from_iterator(corpus * 3, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token="<pad>", bos_token="<bos>")
    if chat_template:
        hf.chat_template = chat_template
    return hf


def _save(folder, model, tok):
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_tokenizers():
    return {"chat": _tokenizer(CHATML, "<|im_end|>"), "plain": _tokenizer(None, "<|endoftext|>"),
            "gemma": _tokenizer(GEMMA_LIKE, "<end_of_turn>")}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tiny_tokenizers):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("tiny-models")
    chat = tiny_tokenizers["chat"]
    torch.manual_seed(0)
    qcfg = Qwen2Config(vocab_size=len(chat), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       tie_word_embeddings=True, eos_token_id=chat.eos_token_id, initializer_range=0.2,
                       pad_token_id=chat.pad_token_id, bos_token_id=None)
    qwen = Qwen2ForCausalLM(qcfg)
    torch.manual_seed(0)
    gcfg = Gemma3TextConfig(vocab_size=len(chat), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                            max_position_embeddings=512, sliding_window=8, initializer_range=0.2,
                            final_logit_softcapping=30.0,
                            layer_types=["sliding_attention", "full_attention"],
                            eos_token_id=tiny_tokenizers["gemma"].eos_token_id,
                            pad_token_id=chat.pad_token_id, bos_token_id=chat.bos_token_id)
    gemma = Gemma3ForCausalLM(gcfg)
    return {
        "qwen": _save(root / "qwen", qwen, chat),
        "qwen_plain": _save(root / "qwen-plain", qwen, tiny_tokenizers["plain"]),
        "gemma": _save(root / "gemma", gemma, tiny_tokenizers["gemma"]),
    }


@pytest.fixture(scope="session")
def tiny_qwen(tiny_models):
    return tiny_models["qwen"]


@pytest.fixture(scope="session")
def tiny_qwen_plain(tiny_models):
    return tiny_models["qwen_plain"]


@pytest.fixture(scope="session")
def tiny_gemma(tiny_models):
    return tiny_models["gemma"]


@pytest.fixture(scope="session")
def embedded_gemma(tmp_path_factory):
    """The real embedded default (Gemma 3 270M) imported once per session (~1.5 min):
    share it between slow tests instead of importing it in each."""
    from training_app.engine.base_models import EMBEDDED_GEMMA, resolve_base_model

    return resolve_base_model(EMBEDDED_GEMMA, tmp_path_factory.mktemp("base-models"))


@pytest.fixture(scope="session")
def qa_rows():
    return [dict(r) for r in QA]
