#!/usr/bin/env bash
# The full test suite: unit, daemon integration and end-to-end tests (real binaries), then the
# Python package's tests against the real mdld and the testkit's mock servers.
# Builds every binary first so the end-to-end tests find mdld and mdlctl side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
# pytest runs the Python tests; huggingface_hub checks that it finds what mdl wrote, offline.
python3 -m pip install --quiet --disable-pip-version-check pytest huggingface_hub
# strace shows that an add is answered only after the store's fdatasync (client/tests/killloop.rs;
# skipped with a message where it is missing).
if ! command -v strace >/dev/null && command -v apt-get >/dev/null; then
    sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends strace >/dev/null 2>&1 ||
        echo "warning: cannot install strace; the strace test will be skipped" >&2
fi
cargo build --workspace --bins
cargo build -p testkit --example serve_mocks
cargo test --workspace -- --test-threads="${MDL_TEST_THREADS:-4}"
# The Python package, installed the way users install it.
python3 -m pip install --quiet --disable-pip-version-check ./python
python3 -m pytest -q -p no:cacheprovider python/tests
