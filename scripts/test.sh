#!/usr/bin/env bash
# The full test suite: unit, daemon integration and end-to-end tests (real binaries), then the
# Python package's tests against the real mdld and the testkit's mock servers.
# Builds every binary first so the end-to-end tests find mdld and mdlctl side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
# pytest runs the Python tests; huggingface_hub checks that it finds what mdl wrote, offline,
# and shares one cache with mdl (filelock is its lock).
python3 -m pip install --quiet --disable-pip-version-check pytest huggingface_hub filelock
# The labs tests' real components, all on loopback: tinyproxy (proxies) from the system's
# packages, and the olah mirror in its own virtualenv (its dependencies stay out of the
# system Python). Without root or apt, the tests that need them say why they skip.
if ! command -v tinyproxy >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy) >/dev/null ||
      echo "warning: could not install tinyproxy; the proxy tests will skip" >&2
  else
    echo "warning: tinyproxy is not installed; the proxy tests will skip" >&2
  fi
fi
if [ ! -x target/labs-venv/bin/olah-cli ]; then
  { python3 -m venv target/labs-venv &&
    target/labs-venv/bin/pip install --quiet --disable-pip-version-check olah; } >/dev/null ||
    echo "warning: could not install olah; the mirror test will skip" >&2
fi
# The dashboard's browser test drives headless Chromium through chromedriver (Debian packages).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver
  else
    echo "chromium / chromedriver missing and no apt-get: the browser test will be skipped (it fails under CI)"
  fi
fi
cargo build --workspace --bins
cargo build -p testkit --example serve_mocks
cargo test --workspace -- --test-threads="${MDL_TEST_THREADS:-4}"
# The Python package, installed the way users install it.
python3 -m pip install --quiet --disable-pip-version-check ./python
python3 -m pytest -q -p no:cacheprovider python/tests
