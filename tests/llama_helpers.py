"""llama.cpp greedy decoding for the export tests, run in a child process.

llama.cpp brings its own OpenMP runtime; loaded into the pytest process beside torch's, a native
crash takes the whole suite down. In a child, the comparison runs the same and a crash is one
failed test with llama.cpp's output.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_CHILD = """
import json, sys, llama_cpp
path, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
llm = llama_cpp.Llama(model_path=path, n_ctx=128, n_threads=2, verbose=False, seed=0)
ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
out = []
for tok in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0):
    out.append(int(tok))
    if len(out) == n:
        break
print(json.dumps([ids, out]))
"""


def llama_greedy(gguf: Path, prompt: str, n: int) -> tuple[list[int], list[int]]:
    """(prompt token ids, n greedy token ids) from llama.cpp on ``gguf``."""
    pytest.importorskip("llama_cpp")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(gguf), prompt, str(n)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"llama.cpp exited with {proc.returncode}: {proc.stderr[-2000:]}"
    prompt_ids, out = json.loads(proc.stdout.strip().splitlines()[-1])
    return prompt_ids, out
