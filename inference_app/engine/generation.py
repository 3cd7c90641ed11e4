"""Generation backends for the answering engine: transformers in-process, or llama.cpp (GGUF).

A ``Generator`` turns chat messages into text. Both backends render the prompt the way the
model was trained (``training_app.engine.data``): the tokenizer's chat template when it has
one, else the plain "Question: …\\nAnswer:" template; llama.cpp uses the GGUF's own chat
template, or the same plain template when the GGUF has none.

One loaded model serves many requests: ``load_generator`` caches per (path, base, backend,
device), and every generator holds a lock around the model, so concurrent requests wait for
each other instead of corrupting the KV cache or the fast tokenizer (neither is thread-safe).

No Django; torch, transformers and llama_cpp are imported inside the functions that need
them, so importing this module stays cheap.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from training_app.engine.data import has_chat_template, plain_prompt_text, prompt_ids, stop_token_ids

log = logging.getLogger(__name__)

BACKENDS = ("auto", "transformers", "llama_cpp", "remote")
MAX_NEW_TOKENS_LIMIT = 8192


class GenerationError(Exception):
    """A model that cannot be loaded or run; the message says what to do."""


# --------------------------------------------------------------------------- settings


def _number(name: str, value: Any, *, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: must be a number, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ValueError(f"{name}: must be a whole number, got {value!r}")
        return int(value)
    return float(value)


@dataclass(frozen=True)
class GenerationSettings:
    """How to sample an answer. Defaults suit a small chat model; a deployment may edit them.

    ``temperature`` 0 means greedy decoding (what evaluation uses): ``top_p`` and ``top_k`` are
    then ignored, ``repetition_penalty`` still applies (1.0 switches it off, which is exactly
    ``training_app.engine.sft.generate_answers``; see ``greedy()``).
    """

    temperature: float = 0.7  # 0 = greedy; higher = more varied
    top_p: float = 0.9  # nucleus sampling: keep the smallest set of tokens with this much probability
    top_k: int = 50  # keep the k most likely tokens (0 = no limit)
    repetition_penalty: float = 1.2  # >1 discourages repeating tokens (small models loop without it)
    max_new_tokens: int = 256  # answer length cap, in tokens

    def __post_init__(self) -> None:
        t = _number("temperature", self.temperature)
        if not 0.0 <= t <= 5.0:
            raise ValueError(f"temperature: must be between 0 (greedy) and 5, got {self.temperature!r}")
        p = _number("top_p", self.top_p)
        if not 0.0 < p <= 1.0:
            raise ValueError(f"top_p: must be above 0 and at most 1, got {self.top_p!r}")
        k = _number("top_k", self.top_k, integer=True)
        if k < 0:
            raise ValueError(f"top_k: must be 0 (no limit) or more, got {self.top_k!r}")
        r = _number("repetition_penalty", self.repetition_penalty)
        if not 0.0 < r <= 10.0:
            raise ValueError(f"repetition_penalty: must be above 0 and at most 10 (1 = off), got "
                             f"{self.repetition_penalty!r}")
        m = _number("max_new_tokens", self.max_new_tokens, integer=True)
        if not 1 <= m <= MAX_NEW_TOKENS_LIMIT:
            raise ValueError(f"max_new_tokens: must be between 1 and {MAX_NEW_TOKENS_LIMIT}, got "
                             f"{self.max_new_tokens!r}")
        for name, value in (("temperature", t), ("top_p", p), ("top_k", k), ("repetition_penalty", r),
                            ("max_new_tokens", m)):
            object.__setattr__(self, name, value)

    @property
    def greedy_decoding(self) -> bool:
        return self.temperature == 0

    @classmethod
    def greedy(cls, max_new_tokens: int = 256, repetition_penalty: float = 1.0) -> GenerationSettings:
        """Deterministic argmax decoding (evaluation, regression checks)."""
        return cls(temperature=0.0, repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> GenerationSettings:
        """Settings from stored JSON; missing keys take the defaults, unknown keys are refused."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown generation setting; the settings are {', '.join(sorted(known))}")
        return cls(**d)


# --------------------------------------------------------------------------- protocol


@runtime_checkable
class Generator(Protocol):
    """What the answering engine needs from a model."""

    model_id: str

    def generate(self, messages_batch: Sequence[list[dict]], settings: GenerationSettings) -> list[str]:
        ...

    def stream(self, messages: list[dict], settings: GenerationSettings) -> Iterator[str]:
        ...


def strip_stream(pieces: Iterable[str]) -> Iterator[str]:
    """Yield ``pieces`` so that their concatenation is ``"".join(pieces).strip()``: leading
    whitespace is dropped, trailing whitespace is held back until more text follows."""
    started = False
    held = ""
    for piece in pieces:
        if not piece:
            continue
        if not started:
            piece = piece.lstrip()
            if not piece:
                continue
            started = True
        body = piece.rstrip()
        tail = piece[len(body):]
        if body:
            yield held + body
            held = tail
        else:
            held += tail


def merge_system(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The messages with system turns folded into the first user turn (for chat templates that
    refuse a system role, e.g. older Gemma templates)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    out = [dict(m) for m in messages if m["role"] != "system"]
    if system:
        for m in out:
            if m["role"] == "user":
                m["content"] = f"{system}\n\n{m['content']}"
                break
        else:
            out.insert(0, {"role": "user", "content": system})
    return out


# --------------------------------------------------------------------------- transformers


class _Cancel:
    """A stopping criterion that ends generation when ``event`` is set (abandoned stream)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class TransformersGenerator:
    """A causal LM in this process. Greedy output equals ``sft.generate_answers`` (same prompt,
    same stop tokens) when ``repetition_penalty`` is 1.

    ``batch_size``: prompts per ``model.generate`` call in ``generate`` (left-padded).
    """

    def __init__(self, model: Any, tokenizer: Any, model_id: str = "", *, batch_size: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id or str(getattr(getattr(model, "config", None), "_name_or_path", "") or "model")
        self.batch_size = max(1, int(batch_size))
        self.stops = stop_token_ids(tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (self.stops[0] if self.stops else 0))
        self.chat_template = has_chat_template(tokenizer)
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, base_model: str | Path | None = None, *,
                        device: str = "auto", batch_size: int = 8) -> TransformersGenerator:
        """Load a full model folder, or an adapter folder with its base (the adapter's recorded
        base when ``base_model`` is None). Raises ``GenerationError``."""
        from training_app.engine.base_models import BaseModelError
        from training_app.engine.sft import load_for_inference

        md = Path(model_dir).expanduser()
        if not md.exists():
            raise GenerationError(f"Model folder {str(model_dir)!r} does not exist (resolved to {md.resolve()}). "
                                  "Check the model version's path, or train/import the model again.")
        if not md.is_dir():
            raise GenerationError(f"{str(model_dir)!r} is a file, not a model folder. For a GGUF file use the "
                                  "llama_cpp backend; otherwise give the folder that holds the model.")
        try:
            model, tok = load_for_inference(md, base_model, device=device)
        except BaseModelError as exc:
            raise GenerationError(f"Cannot load the model at {md}: {exc}") from exc
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise GenerationError(f"Cannot load the model at {md}: {type(exc).__name__}: {exc}") from exc
        return cls(model, tok, str(md.resolve()), batch_size=batch_size)

    # ---- prompt

    def prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of the prompt: the chat template (a template refusing a system role gets it
        folded into the user turn), else the plain template."""
        msgs = [dict(m) for m in messages]
        try:
            ids = prompt_ids(self.tokenizer, msgs)
        except Exception:
            if not self.chat_template or not any(m["role"] == "system" for m in msgs):
                raise
            ids = prompt_ids(self.tokenizer, merge_system(msgs))
        return ids

    def _max_positions(self) -> int | None:
        cfg = getattr(self.model, "config", None)
        cfg = getattr(cfg, "get_text_config", lambda: cfg)() if cfg is not None else None
        n = getattr(cfg, "max_position_embeddings", None)
        return int(n) if isinstance(n, int) and n > 0 else None

    def _budget(self, n_prompt: int, settings: GenerationSettings) -> int:
        limit = self._max_positions()
        if limit is None:
            return settings.max_new_tokens
        if n_prompt >= limit:
            raise GenerationError(
                f"The prompt has {n_prompt} tokens but {self.model_id} reads at most {limit}: retrieve fewer "
                "passages (lower k), use shorter chunks, or use a model with a longer context."
            )
        return max(1, min(settings.max_new_tokens, limit - n_prompt))

    def _generate_kwargs(self, settings: GenerationSettings, max_new_tokens: int) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_new_tokens": max_new_tokens, "eos_token_id": self.stops or None,
                              "pad_token_id": self.pad_id}
        if settings.repetition_penalty != 1.0:
            kw["repetition_penalty"] = settings.repetition_penalty
        if settings.greedy_decoding:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kw.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p,
                      top_k=settings.top_k or None)  # 0 = no top-k limit
        return kw

    def _decode(self, new: list[int]) -> str:
        stops = set(self.stops)
        for i, t in enumerate(new):
            if t in stops:
                new = new[:i]
                break
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()

    def _device(self):
        return next(self.model.parameters()).device

    # ---- generate

    def generate(self, messages_batch: Sequence[list[dict]], settings: GenerationSettings) -> list[str]:
        import torch

        prompts = [self.prompt_ids(m) for m in messages_batch]
        out: list[str] = [""] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # similar lengths share a batch
        with self._lock:
            device = self._device()
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                width = max(len(prompts[i]) for i in chunk)
                budget = self._budget(width, settings)
                ids = torch.tensor([[self.pad_id] * (width - len(prompts[i])) + prompts[i] for i in chunk],
                                   device=device)
                mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk],
                                    device=device)
                try:
                    with torch.no_grad():
                        gen = self.model.generate(input_ids=ids, attention_mask=mask,
                                                  **self._generate_kwargs(settings, budget))
                except GenerationError:
                    raise
                except Exception as exc:
                    raise GenerationError(f"Generation with {self.model_id} failed: {type(exc).__name__}: {exc}") \
                        from exc
                for row, i in enumerate(chunk):
                    out[i] = self._decode(gen[row, width:].tolist())
        return out

    def stream(self, messages: list[dict], settings: GenerationSettings) -> Iterator[str]:
        """Text pieces as they are generated (``transformers.TextIteratorStreamer``, generation in
        a thread); their concatenation equals ``generate([messages], settings)[0]``. Closing the
        iterator early stops the generation."""
        import torch
        from transformers import TextIteratorStreamer

        ids = self.prompt_ids(messages)
        cancel = threading.Event()
        failure: list[BaseException] = []
        self._lock.acquire()  # released by the worker thread when generation ends
        try:
            device = self._device()
            budget = self._budget(len(ids), settings)
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
            inputs = torch.tensor([ids], device=device)
            kwargs = self._generate_kwargs(settings, budget)
        except BaseException:
            self._lock.release()
            raise

        def work() -> None:
            from transformers import StoppingCriteriaList

            try:
                with torch.no_grad():
                    self.model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), streamer=streamer,
                                        stopping_criteria=StoppingCriteriaList([_Cancel(cancel)]), **kwargs)
            except BaseException as exc:  # reported to the consumer below
                failure.append(exc)
                streamer.end()
            finally:
                self._lock.release()

        thread = threading.Thread(target=work, name="vsm-generate-stream", daemon=True)
        try:
            thread.start()
        except BaseException:
            self._lock.release()
            raise
        try:
            yield from strip_stream(streamer)
        finally:
            cancel.set()
            thread.join()
        if failure:
            exc = failure[0]
            raise GenerationError(f"Generation with {self.model_id} failed: {type(exc).__name__}: {exc}") from exc

    def __repr__(self) -> str:
        return f"TransformersGenerator({self.model_id!r})"


# --------------------------------------------------------------------------- llama.cpp


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise GenerationError(
            "The llama_cpp backend needs llama-cpp-python, which is not installed here. Install it with "
            "`pip install llama-cpp-python` (it compiles, ~6 minutes), or serve the model's transformers "
            "folder with the transformers backend."
        ) from exc
    return llama_cpp


class LlamaCppGenerator:
    """A GGUF model through llama-cpp-python. The GGUF's chat template is used when it has one
    (``create_chat_completion``), else the plain "Question: …\\nAnswer:" template
    (``create_completion``), matching how the model was trained."""

    def __init__(self, model_path: str | Path, *, n_ctx: int = 4096, n_threads: int | None = None,
                 n_gpu_layers: int = 0, llama: Any = None):
        path = Path(model_path).expanduser()
        if llama is None:
            if not path.is_file():
                what = "is a folder, not a .gguf file" if path.is_dir() else "does not exist"
                raise GenerationError(f"GGUF model {str(model_path)!r} {what} (resolved to {path.resolve()}). "
                                      "Export the model version to GGUF first, or give the path of the .gguf file.")
            llama_cpp = _import_llama_cpp()
            try:
                llama = llama_cpp.Llama(model_path=str(path), n_ctx=int(n_ctx), n_threads=n_threads,
                                        n_gpu_layers=int(n_gpu_layers), verbose=False)
            except Exception as exc:
                raise GenerationError(f"llama.cpp could not load {path}: {type(exc).__name__}: {exc}. Is it a "
                                      "complete GGUF file (re-export it if in doubt)?") from exc
        self.llm = llama
        self.model_id = str(path.resolve()) if str(model_path) else "gguf"
        metadata = getattr(llama, "metadata", None) or {}
        self.chat_template = bool(metadata.get("tokenizer.chat_template"))
        self._lock = threading.Lock()

    def _kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        return {"temperature": float(settings.temperature), "top_p": float(settings.top_p),
                "top_k": int(settings.top_k), "min_p": 0.0, "repeat_penalty": float(settings.repetition_penalty),
                "max_tokens": int(settings.max_new_tokens)}

    def _call(self, messages: Sequence[Mapping[str, str]], settings: GenerationSettings, stream: bool):
        msgs = [dict(m) for m in messages]
        kw = self._kwargs(settings)
        if not self.chat_template:
            return self.llm.create_completion(prompt=plain_prompt_text(msgs), stream=stream, **kw)
        try:
            return self.llm.create_chat_completion(messages=msgs, stream=stream, **kw)
        except Exception:
            if not any(m["role"] == "system" for m in msgs):
                raise
            return self.llm.create_chat_completion(messages=merge_system(msgs), stream=stream, **kw)

    @staticmethod
    def _text(choice: Mapping[str, Any]) -> str:
        if "message" in choice:
            return str(choice["message"].get("content") or "")
        if "delta" in choice:
            return str(choice["delta"].get("content") or "")
        return str(choice.get("text") or "")

    def generate(self, messages_batch: Sequence[list[dict]], settings: GenerationSettings) -> list[str]:
        out = []
        with self._lock:
            for messages in messages_batch:
                try:
                    result = self._call(messages, settings, stream=False)
                except Exception as exc:
                    raise GenerationError(f"Generation with {self.model_id} failed: {type(exc).__name__}: {exc}") \
                        from exc
                out.append(self._text(result["choices"][0]).strip())
        return out

    def stream(self, messages: list[dict], settings: GenerationSettings) -> Iterator[str]:
        with self._lock:
            try:
                chunks = self._call(messages, settings, stream=True)
                yield from strip_stream(self._text(c["choices"][0]) for c in chunks if c.get("choices"))
            except GenerationError:
                raise
            except GeneratorExit:
                raise
            except Exception as exc:
                raise GenerationError(f"Generation with {self.model_id} failed: {type(exc).__name__}: {exc}") from exc

    def __repr__(self) -> str:
        return f"LlamaCppGenerator({self.model_id!r})"


# --------------------------------------------------------------------------- remote (OpenAI-compatible)


class RemoteGenerator:
    """A model served elsewhere behind an OpenAI-compatible ``/v1/chat/completions`` (vLLM, a
    llama.cpp server, Ollama): the way to serve many users from GPU machines. Requests run
    concurrently (the server batches them); no lock is held here."""

    def __init__(self, base_url: str, model: str, *, api_key: str = "", timeout: float = 120.0, client: Any = None):
        if not str(base_url or "").strip() or not str(model or "").strip():
            raise GenerationError("A remote backend needs the server's base URL (for example "
                                  "http://gpu-1:8000/v1) and the model name it serves.")
        if client is None:
            from openai import OpenAI

            client = OpenAI(base_url=str(base_url).rstrip("/"), api_key=api_key or "none", timeout=timeout,
                            max_retries=1)
        self.client = client
        self.model = str(model)
        self.model_id = f"{str(base_url).rstrip('/')}#{model}"

    def _kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        # top_k and repetition_penalty are not OpenAI fields; vLLM and llama.cpp's server read them from the body.
        return {"temperature": float(settings.temperature), "top_p": float(settings.top_p),
                "max_tokens": int(settings.max_new_tokens),
                "extra_body": {"top_k": int(settings.top_k), "repetition_penalty": float(settings.repetition_penalty)}}

    def _fail(self, exc: Exception) -> GenerationError:
        return GenerationError(f"The remote model {self.model_id} failed: {type(exc).__name__}: {exc}")

    def generate(self, messages_batch: Sequence[list[dict]], settings: GenerationSettings) -> list[str]:
        out = []
        for messages in messages_batch:
            try:
                result = self.client.chat.completions.create(model=self.model, messages=[dict(m) for m in messages],
                                                             **self._kwargs(settings))
            except Exception as exc:
                raise self._fail(exc) from exc
            out.append(str(result.choices[0].message.content or "").strip())
        return out

    def stream(self, messages: list[dict], settings: GenerationSettings) -> Iterator[str]:
        try:
            chunks = self.client.chat.completions.create(model=self.model, messages=[dict(m) for m in messages],
                                                         stream=True, **self._kwargs(settings))
            yield from strip_stream(str(c.choices[0].delta.content or "") for c in chunks if c.choices)
        except GeneratorExit:
            raise
        except Exception as exc:
            raise self._fail(exc) from exc

    def __repr__(self) -> str:
        return f"RemoteGenerator({self.model_id!r})"


# --------------------------------------------------------------------------- loading + cache


_generators: dict[tuple[str, str, str, str], Generator] = {}
_generator_locks: dict[tuple[str, str, str, str], threading.Lock] = {}
_registry_lock = threading.Lock()


def _pick_backend(path: Path, backend: str) -> str:
    if backend not in BACKENDS:
        raise GenerationError(f"Unknown generation backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    if backend == "auto":
        return "llama_cpp" if path.suffix.lower() == ".gguf" else "transformers"
    return backend


def load_generator(model_dir: str | Path, base_model: str | Path | None = None, *, backend: str = "auto",
                   device: str = "auto", **options: Any) -> Generator:
    """The generator for a model, loaded once per (path, base, backend, device) in this process.

    ``backend``: "transformers" (a full model folder, or an adapter folder + ``base_model``),
    "llama_cpp" (``model_dir`` is a .gguf file) or "auto" (.gguf → llama_cpp, else
    transformers). ``options`` go to the backend (``batch_size`` for transformers; ``n_ctx``,
    ``n_threads`` for llama.cpp). Concurrent first calls wait for one load. Raises
    ``GenerationError`` naming what is missing.
    """
    raw = str(model_dir or "").strip()
    if not raw:
        raise GenerationError("No model given: pass the model version's folder (or its .gguf file).")
    path = Path(raw).expanduser()
    chosen = _pick_backend(path, backend)
    if chosen == "remote":
        raise GenerationError("A remote backend is not a local file: build it with RemoteGenerator(base_url, model).")
    if not path.exists():
        kind = ".gguf file" if chosen == "llama_cpp" else "model folder"
        raise GenerationError(f"The {kind} {raw!r} does not exist (resolved to {path.resolve()}). Check the model "
                              "version's path, or train/export the model again.")
    key = (str(path.resolve()), str(base_model or ""), chosen, str(device))
    with _registry_lock:
        if key in _generators:
            return _generators[key]
        lock = _generator_locks.setdefault(key, threading.Lock())
    with lock:
        if key in _generators:
            return _generators[key]
        t0 = time.perf_counter()
        if chosen == "llama_cpp":
            if base_model:
                log.info("base_model %s ignored: a GGUF file is a whole model", base_model)
            gen: Generator = LlamaCppGenerator(path, n_gpu_layers=0 if device == "cpu" else -1, **options)
        else:
            gen = TransformersGenerator.from_pretrained(path, base_model, device=device, **options)
        log.info("loaded %r in %.1f s", gen, time.perf_counter() - t0)
        with _registry_lock:
            _generators[key] = gen
        return gen


def unload_generators(model_dir: str | Path | None = None) -> int:
    """Forget cached generators (all, or those of ``model_dir``), e.g. when a model version is
    deactivated, so their memory can be freed. Returns how many were dropped."""
    with _registry_lock:
        if model_dir is None:
            keys = list(_generators)
        else:
            target = str(Path(model_dir).expanduser().resolve())
            keys = [k for k in _generators if k[0] == target]
        for k in keys:
            del _generators[k]
            _generator_locks.pop(k, None)
    return len(keys)


__all__ = [
    "BACKENDS",
    "GenerationError",
    "GenerationSettings",
    "Generator",
    "LlamaCppGenerator",
    "RemoteGenerator",
    "TransformersGenerator",
    "load_generator",
    "merge_system",
    "strip_stream",
    "unload_generators",
]
