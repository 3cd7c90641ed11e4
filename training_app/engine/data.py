"""Rows → token ids + labels, and micro-batches that waste no compute on padding.

Labels follow the Hugging Face convention (``labels[i]`` is the token at position ``i``,
-100 where no loss is taken). Only answer tokens carry labels for ``sft`` and
``judge_sft``; ``cpt`` trains on every token. The prompt is rendered with the
tokenizer's chat template when it has one, else with a plain
"Question: …\\nAnswer: …" template ending in EOS; generation uses the very same
prompt (``prompt_ids``), so what the model learned is what it is asked.

Packing: a micro-batch's examples are packed into rows of at most ``max_length``
tokens with ``position_ids`` restarting at 0 for every example and no attention mask.
transformers (5.x, ``masking_utils.find_packed_sequence_indices``) turns such
position ids into a block-diagonal causal mask for eager/SDPA/flex attention and into
varlen calls for flash attention, so packed examples never see each other.
Targets are shifted *per example* before packing, so no example learns to predict the
first token of its neighbour.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

IGNORE = -100

# End-of-turn tokens of common chat templates; generation stops on any present.
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "<|end|>",
                      "</s>", "<eos>")


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]          # same length; IGNORE where no loss is taken

    @property
    def n_targets(self) -> int:
        # positions that predict a labelled next token
        return sum(1 for x in self.labels[1:] if x != IGNORE)


@dataclass
class DataStats:
    rows: int = 0              # rows given
    examples: int = 0          # examples produced (cpt may split one row into several)
    truncated: int = 0         # prompt cut from the left to fit max_length
    dropped: int = 0           # rows that could not fit (answer alone too long) or had nothing to learn
    split: int = 0             # cpt rows longer than max_length, split into windows
    tokens: int = 0
    label_tokens: int = 0
    template: str = ""         # "chat" or "plain"
    span_fallbacks: int = 0    # rows where the prompt was not a token prefix of the full text
    multi_turn: int = 0        # conversations trained on every assistant turn

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --------------------------------------------------------------------------- messages
def _message(m: Any, i: int) -> dict[str, str]:
    if isinstance(m, dict):
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        role = {"human": "user", "gpt": "assistant", "model": "assistant"}.get(role, role)
        if role in ("system", "user", "assistant") and isinstance(content, str):
            return {"role": role, "content": content}
    raise ValueError(f"row {i}: a message must be {{'role': system|user|assistant, 'content': str}}, got {m!r}")


def sft_messages(row: dict[str, Any], i: int = 0) -> tuple[list[dict[str, str]], str]:
    """(prompt messages, answer) for an sft row ``{question, answer, system?, history?}`` (or a
    ShareGPT ``{messages}`` row: everything before its last assistant turn is the prompt)."""
    if row.get("messages") is not None and row.get("question") is None:
        msgs = conversation_messages(row, i)
        return msgs[:-1], msgs[-1]["content"]
    q, a = row.get("question"), row.get("answer")
    if not isinstance(q, str) or not isinstance(a, str):
        raise ValueError(f"row {i}: sft rows need 'question' and 'answer' strings")
    return question_messages(q, system=row.get("system"), history=row.get("history"), i=i), a


def question_messages(question: str, system: str | None = None,
                      history: Sequence[Any] | None = None, i: int = 0) -> list[dict[str, str]]:
    msgs: list[dict[str, str]] = []
    if system:
        msgs.append({"role": "system", "content": str(system)})
    for turn in history or ():
        if isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn):
            msgs.append({"role": "user", "content": turn[0]})
            msgs.append({"role": "assistant", "content": turn[1]})
        else:
            msgs.append(_message(turn, i))
    msgs.append({"role": "user", "content": question})
    return msgs


def grounded_rows(records: Sequence[Any], *, seed: int = 0, refuse_every: int = 5,
                  max_passage_chars: int | None = None) -> list[dict[str, Any]]:
    """SFT rows in the grounded prompt the chat serves (``grounded_messages``), RAFT-style.

    Each record with a source passage (``chunk_text``) is asked again with that passage and one other
    passage, in a seeded order, and answered citing the passage's number; every ``refuse_every``-th
    record is also asked with the other passage alone and answered "not covered". A small model learns
    to read the answer out of the passages it is given, and to say so when they do not hold it.
    The other passage never states a fact of the answer (an overlapping chunk would make "not covered"
    a lie). ``max_passage_chars`` keeps the prompt within the training length (cut from the left, a
    long prompt would lose the passage the answer cites).
    """
    from inference_app.engine.answering import NOT_COVERED, detect_language, grounded_messages
    from inference_app.engine.index import Passage
    from training_app.engine.evaluation import fact_keys

    usable = [r for r in records if getattr(r, "chunk_text", "") and getattr(r, "source_chunk_id", None)]
    passages = {str(r.source_chunk_id): Passage(str(r.source_chunk_id), r.chunk_text, document=r.document or "")
                for r in usable}
    if len(passages) < 2:
        return []
    rng = random.Random(seed)
    ids = sorted(passages)
    rows: list[dict[str, Any]] = []
    def prompt(question: str, shown: list) -> tuple[str, str]:
        system, user = (m["content"] for m in grounded_messages(question, shown, max_passage_chars=max_passage_chars))
        return system, user

    for n, record in enumerate(usable):
        own = passages[str(record.source_chunk_id)]
        facts = fact_keys(record.answer)
        clean = [i for i in ids if i != own.id and not facts & fact_keys(passages[i].text)]
        if not clean:
            continue
        other = passages[rng.choice(clean)]
        shown = [own, other] if rng.random() < 0.5 else [other, own]
        number = shown.index(own) + 1
        system, user = prompt(record.question, shown)
        rows.append({"question": user, "answer": f"{record.answer.strip()} [{number}]", "system": system,
                     "history": []})
        if refuse_every and n % refuse_every == 0:
            system, user = prompt(record.question, [other])
            rows.append({"question": user, "answer": NOT_COVERED[detect_language(record.question)],
                         "system": system, "history": []})
    return rows


def judge_messages(row: dict[str, Any], i: int = 0) -> tuple[list[dict[str, str]], str]:
    raw = row.get("messages", row.get("conversations"))
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"row {i}: judge_sft rows need a 'messages' list")
    msgs = [_message(m, i) for m in raw]
    if msgs[-1]["role"] != "assistant":
        raise ValueError(f"row {i}: the last message of a judge_sft row must be the assistant's")
    return msgs[:-1], msgs[-1]["content"]


# --------------------------------------------------------------------------- templates
def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _render(tokenizer, messages, add_generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
    if not isinstance(text, str):  # some versions return a list for a batch
        text = text[0]
    return text


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def plain_prompt_text(messages: Sequence[dict[str, str]]) -> str:
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"].strip() + "\n\n")
        elif m["role"] == "user":
            parts.append(f"Question: {m['content'].strip()}\nAnswer:")
        else:
            parts.append(f" {m['content'].strip()}\n\n")
    return "".join(parts)


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus the end-of-turn tokens of the template, for generation."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for tok in END_OF_TURN_TOKENS:
        if tok in vocab and vocab[tok] not in ids:
            ids.append(int(vocab[tok]))
    return ids


def prompt_ids(tokenizer, messages: Sequence[dict[str, str]]) -> list[int]:
    """Token ids of the prompt exactly as training saw it before the answer."""
    if has_chat_template(tokenizer):
        return _ids(tokenizer, _render(tokenizer, list(messages), True), False)
    return _ids(tokenizer, plain_prompt_text(messages), True)


def encode_chat(tokenizer, messages: Sequence[dict[str, str]], answer: str) -> tuple[list[int], list[int], bool]:
    """(prompt ids, answer ids, used_fallback) for one conversation.

    With a chat template the prompt is the template rendered with
    ``add_generation_prompt=True``; when its tokens are a prefix of the full
    conversation's tokens (the usual case) the answer is the rest. Otherwise the
    assistant span is located by character offsets in the full text.
    """
    if not has_chat_template(tokenizer):
        p = _ids(tokenizer, plain_prompt_text(messages), True)
        a = _ids(tokenizer, " " + answer.strip(), False)
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has neither a chat template nor an EOS token")
        return p, a + [int(tokenizer.eos_token_id)], False

    msgs = list(messages)
    prompt_text = _render(tokenizer, msgs, True)
    full_text = _render(tokenizer, msgs + [{"role": "assistant", "content": answer}], False)
    p = _ids(tokenizer, prompt_text, False)
    full = _ids(tokenizer, full_text, False)
    fallback = False
    if full[:len(p)] == p and len(full) > len(p):
        cut = len(p)
    else:
        fallback = True
        enc = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
        full = list(enc["input_ids"])
        offsets = enc["offset_mapping"]
        start = full_text.rfind(answer) if answer else -1
        if start < 0:  # answer rewritten by the template: fall back to the common text prefix
            start = 0
            while start < min(len(prompt_text), len(full_text)) and prompt_text[start] == full_text[start]:
                start += 1
        cut = next((k for k, (s, e) in enumerate(offsets) if e > start), len(full))
    a = full[cut:]
    stops = set(stop_token_ids(tokenizer))
    if stops and not stops.intersection(a) and tokenizer.eos_token_id is not None:
        a = a + [int(tokenizer.eos_token_id)]  # the model must learn to stop
    return full[:cut], a, fallback


def conversation_messages(row: dict[str, Any], i: int = 0) -> list[dict[str, str]] | None:
    """The whole conversation of a multi-turn sft row, or None for a single-turn one.

    A row is multi-turn when it carries ShareGPT ``messages`` (system?, then user/assistant turns
    ending with an assistant turn) or a non-empty ``history`` beside its question and answer."""
    if row.get("messages") is not None:
        raw = row["messages"]
        if not isinstance(raw, list) or not raw:
            raise ValueError(f"row {i}: 'messages' must be a non-empty list")
        msgs = [_message(m, i) for m in raw]
        body = msgs[1:] if msgs[0]["role"] == "system" else msgs
        roles = [m["role"] for m in body]
        if len(roles) < 2 or len(roles) % 2 or roles != ["user", "assistant"] * (len(roles) // 2):
            raise ValueError(f"row {i}: messages must alternate user/assistant after an optional system "
                             "and end with an assistant turn")
        return msgs
    if not row.get("history"):
        return None
    prompt, answer = sft_messages(row, i)
    return prompt + [{"role": "assistant", "content": answer}]


def encode_conversation(tokenizer, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[int], bool]:
    """(input ids, labels, used_fallback) of a multi-turn conversation: every assistant turn is a
    target (its content and the tokens that end it), everything else (system, user turns, the
    template's role markers) is IGNORE.

    With a chat template the conversation is built turn by turn: the prompt up to each assistant
    turn (``encode_chat``) must extend the tokens so far. A template that renders earlier turns
    differently once later ones follow (some drop earlier reasoning) breaks that; then only the last
    assistant turn is a target, as in a single-turn row, and ``used_fallback`` says so.
    """
    msgs = list(messages)
    turns = [k for k, m in enumerate(msgs) if m["role"] == "assistant"]
    if not turns:
        raise ValueError("a conversation needs at least one assistant turn")
    if not has_chat_template(tokenizer):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has neither a chat template nor an EOS token")
        ids: list[int] = []
        labels: list[int] = []
        bos = getattr(tokenizer, "bos_token_id", None)
        for k, m in enumerate(msgs):
            if m["role"] == "assistant":
                seg = _ids(tokenizer, " " + m["content"].strip(), False) + [int(tokenizer.eos_token_id)]
                ids += seg
                labels += seg
                continue
            text = plain_prompt_text([m])
            if k and msgs[k - 1]["role"] == "assistant":
                text = "\n\n" + text
            seg = _ids(tokenizer, text, not ids and bos is not None)
            ids += seg
            labels += [IGNORE] * len(seg)
        return ids, labels, False
    ids, labels = [], []
    for k in turns:
        p, a, _fb = encode_chat(tokenizer, msgs[:k], msgs[k]["content"])
        if p[:len(ids)] != ids:  # the template re-rendered an earlier turn: train the last turn only
            p, a, _fb = encode_chat(tokenizer, msgs[:turns[-1]], msgs[turns[-1]]["content"])
            return p + a, [IGNORE] * len(p) + list(a), True
        delta = p[len(ids):]
        ids = ids + delta + a
        labels = labels + [IGNORE] * len(delta) + list(a)
    return ids, labels, False


def _fit_conversation(ids: list[int], labels: list[int], max_length: int,
                      bos_id: int | None) -> tuple[list[int] | None, list[int] | None, bool]:
    """Cut a conversation from the left (keeping BOS) to max_length; None when no target is left."""
    if len(ids) <= max_length:
        return ids, labels, False
    keep = 1 if ids and bos_id is not None and ids[0] == bos_id else 0
    ids, labels = ids[:keep] + ids[len(ids) - (max_length - keep):], labels[:keep] + labels[len(labels) - (max_length - keep):]
    if all(x == IGNORE for x in labels):
        return None, None, True
    return ids, labels, True


def _fit(p: list[int], a: list[int], max_length: int, bos_id: int | None) -> tuple[list[int] | None, bool]:
    """Cut the prompt from the left so prompt+answer fits; None when the answer cannot fit."""
    if len(p) + len(a) <= max_length:
        return p, False
    keep_head = 1 if p and bos_id is not None and p[0] == bos_id else 0
    room = max_length - len(a) - keep_head
    if room < 1:
        return None, True
    return p[:keep_head] + p[len(p) - room:], True


def encode_rows(kind: str, rows: Iterable[dict[str, Any]], tokenizer, max_length: int, *,
                mask_history: bool = False) -> tuple[list[Example], DataStats]:
    """Examples for a training kind, with counts of what had to be cut or dropped.

    Multi-turn sft rows train every assistant turn (``mask_history`` keeps only the last one a target)."""
    stats = DataStats(template="chat" if has_chat_template(tokenizer) and kind != "cpt" else "plain")
    out: list[Example] = []
    bos = getattr(tokenizer, "bos_token_id", None)
    for i, row in enumerate(rows):
        stats.rows += 1
        if not isinstance(row, dict):
            raise ValueError(f"row {i}: expected a dict, got {type(row).__name__}")
        if kind == "cpt":
            text = row.get("text")
            if not isinstance(text, str):
                raise ValueError(f"row {i}: cpt rows need a 'text' string")
            ids = _ids(tokenizer, text, True)
            if tokenizer.eos_token_id is not None:
                ids.append(int(tokenizer.eos_token_id))
            windows = [ids[k:k + max_length] for k in range(0, len(ids), max_length)]
            windows = [w for w in windows if len(w) >= 2]
            if not windows:
                stats.dropped += 1
                continue
            if len(windows) > 1:
                stats.split += 1
            for w in windows:
                out.append(Example(list(w), list(w)))
            continue
        if kind == "sft":
            conversation = conversation_messages(row, i) if not mask_history else None
            if conversation is not None:  # multi-turn: every assistant turn is trained, nothing else
                ids, labels, fb = encode_conversation(tokenizer, conversation)
                stats.span_fallbacks += int(fb)
                ids, labels, cut = _fit_conversation(ids, labels, max_length, bos)
                if ids is None:
                    stats.dropped += 1
                    continue
                stats.truncated += int(cut)
                stats.multi_turn += 1
                out.append(Example(ids, labels))
                continue
            msgs, answer = sft_messages(row, i)
        elif kind == "judge_sft":
            msgs, answer = judge_messages(row, i)
        else:
            raise ValueError(f"kind: unknown training kind {kind!r}")
        if not answer.strip():
            stats.dropped += 1
            continue
        p, a, fb = encode_chat(tokenizer, msgs, answer)
        stats.span_fallbacks += int(fb)
        fitted, cut = _fit(p, a, max_length, bos)
        if fitted is None:
            stats.dropped += 1
            continue
        stats.truncated += int(cut)
        out.append(Example(fitted + a, [IGNORE] * len(fitted) + list(a)))
    for ex in out:
        stats.tokens += len(ex.input_ids)
        stats.label_tokens += sum(1 for x in ex.labels if x != IGNORE)
    stats.examples = len(out)
    return out, stats


# --------------------------------------------------------------------------- batching
def shifted_targets(ex: Example) -> list[int]:
    """targets[t] = the label the position t predicts (next token), IGNORE at the end."""
    return list(ex.labels[1:]) + [IGNORE]


def epoch_plan(n_examples: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Deterministic shuffled micro-batches of example indices for one epoch.

    Depends only on (seed, epoch), so a resumed run rebuilds the same plan and skips
    the micro-batches it already trained on.
    """
    idx = list(range(n_examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(idx)
    return [idx[k:k + batch_size] for k in range(0, n_examples, batch_size)]


def pack_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices grouped into bins whose lengths sum ≤ capacity."""
    order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
    bins: list[list[int]] = []
    room: list[int] = []
    for k in order:
        for b, r in enumerate(room):
            if lengths[k] <= r:
                bins[b].append(k)
                room[b] -= lengths[k]
                break
        else:
            bins.append([k])
            room.append(capacity - lengths[k])
    return bins


@dataclass
class Batch:
    input_ids: Any             # LongTensor [rows, T]
    targets: Any               # LongTensor [rows, T], IGNORE where no loss
    position_ids: Any = None   # packed: restarts per example
    attention_mask: Any = None  # padded (unpacked) batches only
    n_tokens: int = 0          # real (non-pad) tokens
    n_targets: int = 0         # positions that carry a loss
    n_rows: int = 0
    extra: dict = field(default_factory=dict)


def collate(examples: Sequence[Example], *, packing: bool, max_length: int, pad_id: int) -> Batch:
    """Tensors for one micro-batch.

    packing=True: examples packed into rows of ≤ max_length (first-fit decreasing);
    rows shorter than the longest end in a padding *segment* (its own positions from 0,
    no targets), so no attention mask is needed at all.
    packing=False: one example per row, right-padded to the longest with an attention mask.
    """
    import torch

    if packing:
        bins = pack_bins([len(e.input_ids) for e in examples], max_length)
        rows_ids, rows_tg, rows_pos = [], [], []
        for b in bins:
            ids, tg, pos = [], [], []
            for k in b:
                ex = examples[k]
                ids += ex.input_ids
                tg += shifted_targets(ex)
                pos += list(range(len(ex.input_ids)))
            rows_ids.append(ids), rows_tg.append(tg), rows_pos.append(pos)
        width = max(len(r) for r in rows_ids)
        for ids, tg, pos in zip(rows_ids, rows_tg, rows_pos):
            pad = width - len(ids)
            ids += [pad_id] * pad
            tg += [IGNORE] * pad
            pos += list(range(pad))
        input_ids = torch.tensor(rows_ids, dtype=torch.long)
        targets = torch.tensor(rows_tg, dtype=torch.long)
        return Batch(input_ids=input_ids, targets=targets,
                     position_ids=torch.tensor(rows_pos, dtype=torch.long),
                     n_tokens=sum(len(e.input_ids) for e in examples),
                     n_targets=int((targets != IGNORE).sum()), n_rows=len(bins))
    width = max(len(e.input_ids) for e in examples)
    ids, tg, mask = [], [], []
    for ex in examples:
        pad = width - len(ex.input_ids)
        ids.append(ex.input_ids + [pad_id] * pad)
        tg.append(shifted_targets(ex) + [IGNORE] * pad)
        mask.append([1] * len(ex.input_ids) + [0] * pad)
    targets = torch.tensor(tg, dtype=torch.long)
    return Batch(input_ids=torch.tensor(ids, dtype=torch.long), targets=targets,
                 attention_mask=torch.tensor(mask, dtype=torch.long),
                 n_tokens=sum(len(e.input_ids) for e in examples),
                 n_targets=int((targets != IGNORE).sum()), n_rows=len(examples))
