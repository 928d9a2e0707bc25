"""An app's model registry, made ready with ``mdl.ensure`` and a progress bar.

    python3 examples/python/registry.py [MODELS_DIR]

Only what is missing or damaged is downloaded (by the daemon: queued, resumable, verified);
running it again is instant. The daemon starts by itself when none runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Dict, List

import mdl

MODELS = sys.argv[1] if len(sys.argv) > 1 else "models"


@dataclass
class Model:
    """One entry of the registry; the field names are the ones ``ensure`` reads."""

    id: str
    url: str
    save_dir: str
    sha256: List[str]
    files: List[str] = field(default_factory=list)
    save_as: List[str] = field(default_factory=list)
    additional_urls: List[Dict[str, str]] = field(default_factory=list)


REGISTRY = [
    Model(
        id="sdxl-vae",
        url="https://huggingface.co/stabilityai/sdxl-vae/resolve/main/",
        files=["sdxl_vae.safetensors"],
        sha256=["63aeecb90ff7bc1c115395962d3e803571385b61938377bc7089b36e81e92e2e"],
        save_dir=f"{MODELS}/vae",
    ),
]


class Bar:
    """A one-line progress bar on stderr, per job."""

    def __init__(self) -> None:
        self.done: Dict[int, int] = {}
        self.total: Dict[int, int] = {}

    def __call__(self, p: mdl.Progress) -> None:
        self.done[p.job] = p.job_bytes_done
        self.total[p.job] = p.job_bytes_total or 0
        done, total = sum(self.done.values()), sum(self.total.values()) or 1
        width = 40
        filled = int(width * done / total)
        speed = p.bytes_per_second / 1e6
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * done / total:5.1f}% {speed:7.1f} MB/s")
        sys.stderr.flush()


def main() -> int:
    try:
        paths = mdl.ensure(REGISTRY, on_progress=Bar())
    except mdl.AuthError as e:
        print(f"\nneeds a token (set HF_TOKEN): {e}", file=sys.stderr)
        return 3
    except mdl.MdlError as e:
        print(f"\nnot ready: {e}", file=sys.stderr)
        return e.exit_code
    sys.stderr.write("\n")
    for model_id, files in paths.items():
        print(f"ready  {model_id}: {', '.join(str(p) for p in files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
