#!/usr/bin/env bash
# The full test suite: unit, daemon integration and end-to-end tests (real binaries), then the
# Python package's tests against the real mdld and the testkit's mock servers.
# Builds every binary first so the end-to-end tests find mdld and mdlctl side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
# pytest runs the Python tests; huggingface_hub checks that it finds what mdl wrote, offline,
# and shares one cache with mdl (filelock is its lock).
python3 -m pip install --quiet --disable-pip-version-check pytest huggingface_hub filelock
# Real components the tests use, all on loopback, from the system's packages: tinyproxy (proxy
# tests), nginx (the proxy-cache mirror from docs/mirrors.md), chromium + chromedriver (the
# dashboard's browser test), strace (an add is answered only after the store's fdatasync).
# Without root or apt, the tests that need them say why they skip (under CI=true the browser,
# mirror and SDK tests fail instead).
missing=()
command -v tinyproxy >/dev/null 2>&1 || missing+=(tinyproxy)
{ command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null 2>&1 || missing+=(nginx)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v strace >/dev/null 2>&1 || missing+=(strace)
if ((${#missing[@]})); then
  sudo=()
  ((EUID == 0)) || sudo=(sudo)
  if command -v apt-get >/dev/null 2>&1; then
    { "${sudo[@]}" apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null ||
      echo "warning: could not install ${missing[*]}; the tests that need them will skip" >&2
  else
    echo "warning: ${missing[*]} missing and no apt-get; the tests that need them will skip" >&2
  fi
fi
# The olah mirror in its own virtualenv (its dependencies stay out of the system Python).
if [ ! -x target/labs-venv/bin/olah-cli ]; then
  { python3 -m venv target/labs-venv &&
    target/labs-venv/bin/pip install --quiet --disable-pip-version-check olah; } >/dev/null ||
    echo "warning: could not install olah; the mirror test will skip" >&2
fi
# The real modelscope SDK (no extras: requests, filelock, tqdm...) in its own virtualenv, for
# the test that checks it finds mdl's ModelScope cache offline.
if [ ! -x target/modelscope-venv/bin/python ] ||
  ! target/modelscope-venv/bin/python -c 'import modelscope' >/dev/null 2>&1; then
  { python3 -m venv target/modelscope-venv &&
    target/modelscope-venv/bin/pip install --quiet --disable-pip-version-check modelscope; } >/dev/null ||
    echo "warning: could not install modelscope; the ModelScope SDK test will skip" >&2
fi
cargo build --workspace --bins
cargo build -p testkit --example serve_mocks
cargo test --workspace -- --test-threads="${MDL_TEST_THREADS:-4}"
# The Python package, installed the way users install it.
python3 -m pip install --quiet --disable-pip-version-check ./python
python3 -m pytest -q -p no:cacheprovider python/tests
