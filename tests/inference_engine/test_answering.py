"""The answering engine: prompts, retrieval confidence, extractive answers, grounded answers
with a fake generator, and the transformers / llama.cpp backends on tiny models. No Django."""
from __future__ import annotations

import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

from inference_app.engine.answering import (
    NOT_COVERED,
    Answer,
    Citation,
    GenerationError,
    GenerationSettings,
    LlamaCppGenerator,
    TransformersGenerator,
    answer_batch,
    answer_question,
    cited_numbers,
    extractive_answer,
    grounded_messages,
    load_generator,
    model_only_messages,
    retrieval_confidence,
    split_sentences,
    stream_answer,
    term_spans,
)
from inference_app.engine.generation import strip_stream, unload_generators
from inference_app.engine.index import Passage, RetrievalIndex, build_index

from ..training_engine.conftest import tiny_models, tiny_tokenizers  # noqa: F401 - fixtures used by name
from .conftest import CORPUS, HashingEncoder

GREEDY = GenerationSettings.greedy(max_new_tokens=16)


class FakeGenerator:
    """Records every prompt; answers with ``reply`` (a string, or a function of the messages)."""

    model_id = "fake:generator"

    def __init__(self, reply="答案 [1]"):
        self.reply = reply
        self.calls: list[list[list[dict]]] = []

    def _text(self, messages):
        return self.reply(messages) if callable(self.reply) else self.reply

    def generate(self, messages_batch, settings):
        self.calls.append([list(m) for m in messages_batch])
        return [self._text(m) for m in messages_batch]

    def stream(self, messages, settings):
        self.calls.append([list(messages)])
        text = self._text(messages)
        for i in range(0, len(text), 3):
            yield text[i:i + 3]


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("answering") / "bm25"
    build_index(CORPUS, folder, encoder=None)
    return RetrievalIndex.load(folder)


@pytest.fixture(scope="module")
def dense_index(tmp_path_factory):
    enc = HashingEncoder()
    folder = tmp_path_factory.mktemp("answering") / "dense"
    build_index(CORPUS, folder, encoder=enc)
    return RetrievalIndex.load(folder), enc


# --------------------------------------------------------------------------- settings


def test_generation_settings_defaults_and_round_trip():
    s = GenerationSettings()
    assert (s.temperature, s.top_p, s.top_k, s.repetition_penalty, s.max_new_tokens) == (0.7, 0.9, 50, 1.2, 256)
    assert not s.greedy_decoding and GenerationSettings(temperature=0).greedy_decoding
    d = GenerationSettings(temperature=0, max_new_tokens=32).to_dict()
    assert d == {"temperature": 0.0, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.2, "max_new_tokens": 32}
    assert GenerationSettings.from_dict(d) == GenerationSettings(temperature=0, max_new_tokens=32)
    assert GenerationSettings.from_dict({}) == GenerationSettings() == GenerationSettings.from_dict(None)
    assert isinstance(GenerationSettings(max_new_tokens=64.0).max_new_tokens, int)


@pytest.mark.parametrize("kwargs, field", [
    ({"temperature": -0.1}, "temperature"), ({"temperature": "hot"}, "temperature"),
    ({"temperature": float("nan")}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"), ({"top_k": 2.5}, "top_k"), ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": True}, "max_new_tokens"),
    ({"max_new_tokens": 10**6}, "max_new_tokens"),
])
def test_generation_settings_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError) as e:
        GenerationSettings(**kwargs)
    assert str(e.value).startswith(f"{field}: ")


def test_generation_settings_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError) as e:
        GenerationSettings.from_dict({"temprature": 0.1})
    assert str(e.value).startswith("temprature: ")


# --------------------------------------------------------------------------- prompts + helpers


def test_grounded_messages_english():
    passages = [CORPUS[5], CORPUS[6], Passage("x", "No source here.")]
    msgs = grounded_messages("What does fault E21 mean?", passages)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert NOT_COVERED["en"] in msgs[0]["content"] and "[1]" in msgs[0]["content"]
    user = msgs[1]["content"]
    assert f"[1] (Inverter manual, p. 40) {CORPUS[5].text}" in user
    assert f"[2] (Inverter manual, p. 55) {CORPUS[6].text}" in user
    assert "[3] No source here." in user
    assert user.index("[2]") < user.index("[3]") < user.index("What does fault E21 mean?")
    assert NOT_COVERED["zh"] not in msgs[0]["content"]


def test_grounded_messages_chinese_and_forced_language():
    msgs = grounded_messages("差旅费报销需要什么材料？", CORPUS[:2])
    assert NOT_COVERED["zh"] in msgs[0]["content"] and NOT_COVERED["en"] not in msgs[0]["content"]
    assert f"[1]（报销办法，第3页）{CORPUS[0].text}" in msgs[1]["content"]
    assert f"[2]（报销办法，第5页）{CORPUS[1].text}" in msgs[1]["content"]
    assert msgs[1]["content"].endswith("问题：差旅费报销需要什么材料？")
    forced = grounded_messages("差旅费报销需要什么材料？", CORPUS[:1], language="en")
    assert NOT_COVERED["en"] in forced[0]["content"]
    history = grounded_messages("那会议费呢？", CORPUS[:1], history=[("差旅费？", "见 [1]。")])
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user"]


def test_model_only_messages_are_what_sft_trained_on():
    from training_app.engine.data import question_messages

    assert model_only_messages("报销截止日期是什么时候？") == question_messages("报销截止日期是什么时候？")


def test_sentence_split_keeps_codes_and_numbers_whole():
    text = "E100.1 过流故障：电流过大。请减轻负载！Check 3.5 V first. Then restart? Done"
    assert [text[s:e] for s, e in split_sentences(text)] == [
        "E100.1 过流故障：电流过大。", "请减轻负载！", "Check 3.5 V first.", "Then restart?", "Done"]


def test_term_spans_whole_words_width_and_case():
    text = "Ｅ１００ fault in the Inverter; e100 again"
    spans = term_spans(text, ["e100", "in", "inverter"])
    assert [text[s:e] for s, e in spans] == ["Ｅ１００", "in", "Inverter", "e100"]


def test_cited_numbers_formats():
    assert cited_numbers("A [2]. B [1, 3] and 【2】[4][5]") == [2, 1, 3, 4, 5]
    assert cited_numbers("no markers, 2023 [x]") == []


def test_strip_stream_equals_stripped_join():
    for pieces in (["  ", " Hel", "lo ", " ", "world", " \n"], ["", "a"], ["   "], ["x y", " "]):
        assert "".join(strip_stream(pieces)) == "".join(pieces).strip()


# --------------------------------------------------------------------------- retrieval confidence


def test_confidence_bm25_is_the_share_of_query_terms_in_the_passage(bm25_index):
    q = "差旅费报销需要什么材料？"  # content terms: 差旅费 报销 需要 材料; the passage lacks 材料
    hits = bm25_index.search(q, 3, method="hybrid")
    assert hits[0].id == "zh-travel"
    assert retrieval_confidence(hits, bm25_index, q) == pytest.approx(0.75)
    assert retrieval_confidence([], bm25_index, q) == 0.0
    e21 = "fault E21 grid over-voltage"
    assert retrieval_confidence(bm25_index.search(e21, 3, method="bm25"), bm25_index, e21) == pytest.approx(1.0)


def test_confidence_with_encoder_is_a_clipped_cosine(dense_index):
    index, enc = dense_index
    q = "fault E21 grid over-voltage"
    hits = index.search(q, 3, method="hybrid", encoder=enc)
    conf = retrieval_confidence(hits, index, q, encoder=enc)
    assert 0.3 < conf <= 1.0
    unrelated = "zebra quantum marmalade"
    assert retrieval_confidence(index.search(unrelated, 3, method="dense", encoder=enc), index, unrelated,
                                encoder=enc) < 0.2


# --------------------------------------------------------------------------- extractive


def test_extractive_answer_picks_the_sentence_with_the_query_terms(tmp_path):
    p = Passage("fan", "The inverter has two fans. Replace the cooling fan when it makes noise. "
                       "Keep the manual. Switch the inverter off before you replace a fan.", "Manual", "d", 9)
    build_index([p, CORPUS[5]], tmp_path / "i", encoder=None)
    index = RetrievalIndex.load(tmp_path / "i")
    q = "When should I replace the cooling fan?"
    hits = index.search(q, 3, method="bm25")
    ans = extractive_answer(q, hits, index, max_sentences=1)
    assert ans.covered and ans.mode == "extractive"
    assert ans.text == "Replace the cooling fan when it makes noise."
    (c,) = ans.citations
    assert (c.passage_id, c.rank, c.document, c.page, c.quote) == ("fan", 1, "Manual", 9, ans.text)
    assert [c.quote[s:e] for s, e in c.highlights] == ["Replace", "cooling", "fan"]
    two = extractive_answer(q, hits, index, max_sentences=2)  # the two best, in text order, gap marked
    assert two.text == ("Replace the cooling fan when it makes noise. … "
                        "Switch the inverter off before you replace a fan.")
    quote = two.citations[0].quote
    assert [quote[s:e] for s, e in two.citations[0].highlights] == ["Replace", "cooling", "fan", "replace", "fan"]
    adjacent = extractive_answer("cooling fan noise manual", hits, index, max_sentences=2)
    assert adjacent.text == "Replace the cooling fan when it makes noise. Keep the manual."


def test_extractive_chinese_highlights(bm25_index):
    q = "E100.1 过流故障怎么处理？"
    ans = answer_question(q, mode="extractive", index=bm25_index, k=3)
    assert ans.covered and ans.citations[0].passage_id == "e100.1"
    quote = ans.citations[0].quote
    assert quote == CORPUS[4].text  # one sentence; the second has no query term
    assert [quote[s:e] for s, e in ans.citations[0].highlights] == ["E100.1", "过流", "故障"]
    assert ans.retrieved_ids[0] == "e100.1" and ans.retrieval_ms > 0


def test_extractive_without_hits_is_not_covered(bm25_index):
    ans = extractive_answer("完全无关的问题", [], bm25_index)
    assert not ans.covered and ans.text == NOT_COVERED["zh"] and ans.citations == ()


# --------------------------------------------------------------------------- grounded (fake generator)


def test_below_threshold_is_not_covered_and_skips_the_generator(bm25_index):
    gen = FakeGenerator()
    q = "差旅费的发票丢了可以用什么材料代替？"  # shares only some terms with the travel passage
    ans = answer_question(q, index=bm25_index, generator=gen, k=3, threshold=0.9)
    assert not ans.covered and ans.text == NOT_COVERED["zh"] and gen.calls == []
    assert ans.citations and ans.citations[0].passage_id == "zh-travel"  # a person sees what was found
    assert ans.confidence is not None and ans.confidence < 0.9
    none = answer_question("zebra quantum marmalade", index=bm25_index, generator=gen, k=3)
    assert not none.covered and none.text == NOT_COVERED["en"] and none.citations == () and gen.calls == []


def test_covered_question_generates_once_from_the_passages(bm25_index):
    gen = FakeGenerator("需要发票原件和行程单 [2]。")
    q = "差旅费报销需要什么材料？"
    ans = answer_question(q, index=bm25_index, generator=gen, k=3, threshold=0.5)
    assert len(gen.calls) == 1 and len(gen.calls[0]) == 1
    prompt = gen.calls[0][0]
    hits = bm25_index.search(q, 3, method="hybrid")
    for n, h in enumerate(hits, start=1):
        assert f"[{n}]" in prompt[-1]["content"] and bm25_index.passage(h.id).text in prompt[-1]["content"]
    assert ans.covered and ans.text == "需要发票原件和行程单 [2]。" and ans.model_id == "fake:generator"
    assert [(c.passage_id, c.rank) for c in ans.citations] == [(hits[1].id, 2)]
    assert ans.retrieved_ids == tuple(h.id for h in hits) and ans.generation_ms >= 0


def test_citations_follow_markers_or_fall_back_to_all_k(bm25_index):
    q = "差旅费报销需要什么材料？"
    hits = bm25_index.search(q, 3, method="hybrid")
    ans = answer_question(q, index=bm25_index, generator=FakeGenerator("见 [3] 和 [1]，以及 [9]。"), k=3)
    assert [c.passage_id for c in ans.citations] == [hits[2].id, hits[0].id]
    plain = answer_question(q, index=bm25_index, generator=FakeGenerator("需要发票原件。"), k=3)
    assert [c.passage_id for c in plain.citations] == [h.id for h in hits]
    c = plain.citations[0]
    assert c.quote == CORPUS[0].text and "发票" in [c.quote[s:e] for s, e in c.highlights]


def test_a_model_reply_of_not_covered_is_not_covered(bm25_index):
    gen = FakeGenerator(NOT_COVERED["zh"])
    ans = answer_question("差旅费报销需要什么材料？", index=bm25_index, generator=gen)
    assert not ans.covered and ans.text == NOT_COVERED["zh"] and len(gen.calls) == 1
    assert answer_question("差旅费报销需要什么材料？", index=bm25_index, generator=FakeGenerator("")).covered is False


def test_model_only_asks_without_retrieval(bm25_index):
    gen = FakeGenerator("每晚不超过500元。")
    ans = answer_question("差旅住宿费每晚报销上限是多少？", mode="model_only", generator=gen)
    assert gen.calls == [[model_only_messages("差旅住宿费每晚报销上限是多少？")]]
    assert ans.covered and ans.citations == () and ans.retrieved_ids == () and ans.mode == "model_only"


def test_answer_question_refuses_bad_arguments(bm25_index):
    for kwargs, field in (({"mode": "magic"}, "mode"), ({"index": None}, "index"), ({"generator": None}, "generator"),
                          ({"k": 0}, "k"), ({"threshold": 2}, "threshold"), ({"language": "fr"}, "language")):
        args = {"index": bm25_index, "generator": FakeGenerator(), **kwargs}
        with pytest.raises(ValueError) as e:
            answer_question("差旅费？", **args)
        assert str(e.value).startswith(f"{field}: ")


def test_answer_batch_generates_in_one_call_only_what_is_covered(bm25_index):
    gen = FakeGenerator(lambda msgs: "答 [1]" if "差旅" in msgs[-1]["content"] else "Fan [1]")
    qs = ["差旅费报销需要什么材料？", "zebra quantum marmalade", "Replace the cooling fan?"]
    answers = answer_batch(qs, index=bm25_index, generator=gen, settings=GREEDY)
    assert len(gen.calls) == 1 and len(gen.calls[0]) == 2
    assert [a.covered for a in answers] == [True, False, True]
    assert answers[1].text == NOT_COVERED["en"] and answers[2].citations[0].passage_id == "en-fan"


def test_stream_answer_events(bm25_index):
    gen = FakeGenerator("需要发票原件和行程单 [1]。")
    events = list(stream_answer("差旅费报销需要什么材料？", index=bm25_index, generator=gen, k=2))
    assert events[0]["type"] == "citations" and events[0]["covered"] is True
    assert [c["passage_id"] for c in events[0]["citations"]] == events[0]["retrieved_ids"]
    tokens = [e["text"] for e in events[1:-1]]
    assert all(e["type"] == "token" for e in events[1:-1]) and len(tokens) > 1
    assert events[-1]["type"] == "done"
    done = Answer.from_dict(events[-1]["answer"])
    assert "".join(tokens) == done.text == "需要发票原件和行程单 [1]。" and len(done.citations) == 1
    miss = list(stream_answer("zebra quantum marmalade", index=bm25_index, generator=gen))
    assert [e["type"] for e in miss] == ["citations", "token", "done"] and miss[1]["text"] == NOT_COVERED["en"]
    only = list(stream_answer("hi", mode="model_only", generator=gen))
    assert only[0]["type"] == "token" and only[-1]["answer"]["mode"] == "model_only"


def test_hybrid_with_encoder_embeds_the_query_once(dense_index):
    index, enc = dense_index
    before = enc.calls
    ans = answer_question("fault E21 grid over-voltage", index=index, encoder=enc, generator=FakeGenerator("E21 [1]"),
                          threshold=0.3)
    assert ans.covered and ans.citations[0].passage_id == "en-grid" and enc.calls == before + 1


def test_answer_round_trips_through_a_dict():
    a = Answer("x [1]", "grounded", True, (Citation("p", 1, 2.5, "Doc", None, "quote", ((0, 2),), "d1", ("H",)),),
               1.5, 2.5, ("p", "q"), 0.5, "m", "en")
    assert Answer.from_dict(a.to_dict()) == a


# --------------------------------------------------------------------------- transformers backend


@pytest.fixture(scope="module")
def qwen_generator(tiny_models):  # noqa: F811
    unload_generators()
    return load_generator(tiny_models["qwen"], device="cpu")


QUESTIONS = ["差旅住宿费每晚报销上限是多少？", "What is the meal allowance per day?", "出租车费需要什么凭证？"]


@pytest.mark.parametrize("variant", ["qwen", "qwen_plain"])
def test_transformers_greedy_equals_sft_generate_answers(tiny_models, variant):  # noqa: F811
    from training_app.engine.sft import generate_answers

    gen = load_generator(tiny_models[variant], device="cpu")
    assert isinstance(gen, TransformersGenerator) and gen.chat_template == (variant == "qwen")
    expected = generate_answers(tiny_models[variant], None, QUESTIONS, max_new_tokens=16, model=gen.model,
                                tokenizer=gen.tokenizer)
    for q, want in zip(QUESTIONS, expected):
        ans = answer_question(q, mode="model_only", generator=gen, settings=GREEDY)
        assert ans.text == want and ans.model_id == gen.model_id
    assert any(expected)  # the comparison compares something


def test_transformers_batched_greedy_equals_one_by_one(qwen_generator):
    one_by_one = [qwen_generator.generate([model_only_messages(q)], GREEDY)[0] for q in QUESTIONS]
    batched = [a.text for a in answer_batch(QUESTIONS, mode="model_only", generator=qwen_generator, settings=GREEDY)]
    assert batched == one_by_one


def test_transformers_stream_concatenates_to_the_greedy_answer(qwen_generator):
    for q in QUESTIONS[:2]:
        msgs = model_only_messages(q)
        pieces = list(qwen_generator.stream(msgs, GREEDY))
        assert "".join(pieces) == qwen_generator.generate([msgs], GREEDY)[0]
    # an abandoned stream stops and frees the model for the next request
    it = qwen_generator.stream(model_only_messages(QUESTIONS[0]), GenerationSettings.greedy(max_new_tokens=200))
    next(it, None)
    it.close()
    assert qwen_generator.generate([model_only_messages(QUESTIONS[1])], GREEDY)


def test_transformers_grounded_prompt_and_sampling_run(qwen_generator, bm25_index):
    ans = answer_question("差旅费报销需要什么材料？", index=bm25_index, generator=qwen_generator,
                          settings=GenerationSettings(max_new_tokens=8, temperature=0.8, repetition_penalty=1.3))
    assert ans.mode == "grounded" and ans.retrieved_ids and ans.generation_ms > 0


def test_a_template_refusing_the_system_role_gets_it_in_the_user_turn(tiny_tokenizers):  # noqa: F811
    import copy

    tok = copy.deepcopy(tiny_tokenizers["chat"])
    tok.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                         "{% endif %}" + tok.chat_template)
    gen = TransformersGenerator(None, tok, "no-system")
    msgs = grounded_messages("What does fault E21 mean?", [CORPUS[5]])
    text = tok.decode(gen.prompt_ids(msgs))
    assert "<|im_start|>system" not in text
    assert text.index("<|im_start|>user") < text.index(NOT_COVERED["en"]) < text.index("[1] (Inverter manual")


def test_concurrent_generate_on_one_cached_generator(tiny_models, qwen_generator):  # noqa: F811
    assert load_generator(tiny_models["qwen"], device="cpu") is qwen_generator  # cached
    msgs = [model_only_messages(QUESTIONS[0])]
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = qwen_generator.generate(msgs, GREEDY)[0]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1 and results[0] is not None


def test_load_generator_missing_paths(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(GenerationError) as e:
        load_generator(str(missing))
    assert "no-such-model" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenerationError) as e:
        load_generator(tmp_path / "empty", backend="transformers")
    assert "empty" in str(e.value) and "config.json" in str(e.value)
    with pytest.raises(GenerationError):
        load_generator(tmp_path / "empty", backend="vllm")


# --------------------------------------------------------------------------- llama.cpp backend


def test_llama_cpp_missing_gguf(tmp_path):
    with pytest.raises(GenerationError) as e:
        load_generator(tmp_path / "model-q8_0.gguf")  # auto → llama_cpp
    assert "model-q8_0.gguf" in str(e.value) and ".gguf file" in str(e.value)
    with pytest.raises(GenerationError) as e:
        LlamaCppGenerator(tmp_path)
    assert "folder" in str(e.value)


def test_llama_cpp_not_installed_says_how_to_install(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp → ImportError
    with pytest.raises(GenerationError) as e:
        LlamaCppGenerator(gguf)
    assert "pip install llama-cpp-python" in str(e.value)


class FakeLlama:
    def __init__(self, model_path, chat_template=True, **kwargs):
        self.model_path, self.kwargs, self.calls = model_path, kwargs, []
        self.metadata = {"tokenizer.chat_template": "{{ x }}"} if chat_template else {}

    def create_chat_completion(self, messages, stream=False, **kw):
        self.calls.append(("chat", messages, stream, kw))
        if stream:
            return iter([{"choices": [{"delta": {"role": "assistant"}}]}, {"choices": [{"delta": {"content": " Hi"}}]},
                         {"choices": [{"delta": {"content": " there [1] "}}]}])
        return {"choices": [{"message": {"content": " Hi there [1] "}}]}

    def create_completion(self, prompt, stream=False, **kw):
        self.calls.append(("plain", prompt, stream, kw))
        return {"choices": [{"text": " plain answer"}]}


def test_llama_cpp_backend_with_a_fake_llama(tmp_path, monkeypatch, bm25_index):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=FakeLlama))
    unload_generators()
    gen = load_generator(gguf, device="cpu", n_ctx=2048)
    assert isinstance(gen, LlamaCppGenerator) and gen.model_id == str(gguf.resolve())
    assert gen.llm.kwargs == {"n_ctx": 2048, "n_threads": None, "n_gpu_layers": 0, "verbose": False}
    ans = answer_question("Replace the cooling fan?", index=bm25_index, generator=gen, settings=GREEDY)
    kind, msgs, stream, kw = gen.llm.calls[-1]
    assert kind == "chat" and not stream and msgs[0]["role"] == "system"
    assert kw == {"temperature": 0.0, "top_p": 0.9, "top_k": 50, "min_p": 0.0, "repeat_penalty": 1.0,
                  "max_tokens": 16}
    assert ans.text == "Hi there [1]" and ans.covered
    assert "".join(gen.stream(msgs, GREEDY)) == "Hi there [1]"
    plain = LlamaCppGenerator(gguf, llama=FakeLlama(str(gguf), chat_template=False))
    assert plain.generate([model_only_messages("Q?")], GREEDY) == ["plain answer"]
    assert plain.llm.calls[-1][1] == "Question: Q?\nAnswer:"
    unload_generators()


# --------------------------------------------------------------------------- import cost


def test_importing_the_engine_does_not_import_torch():
    code = ("import sys, inference_app.engine.answering as a; "
            "bad = [m for m in ('torch', 'transformers', 'llama_cpp', 'django') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
