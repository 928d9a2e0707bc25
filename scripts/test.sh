#!/usr/bin/env bash
# The full test suite: unit, daemon integration and end-to-end tests (real binaries).
# Builds every binary first so the end-to-end tests find mdld and mdlctl side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Hugging Face cache layout test runs the real huggingface_hub offline when it is present.
python3 -m pip install --quiet huggingface_hub || echo "huggingface_hub unavailable: its layout check will be skipped"
cargo build --workspace --bins
cargo test --workspace -- --test-threads="${MDL_TEST_THREADS:-4}"
