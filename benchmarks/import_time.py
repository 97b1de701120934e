"""How much ComfyUI's start-up pays for loading the pack.

Loads a copy of the pack exactly as ComfyUI does (a package named after its folder path, with
stand-ins for `server` and `folder_paths`) in fresh interpreters, and, in the same run, a bare
`import aiohttp` (which ComfyUI itself already pays). Prints the medians and their ratio.

usage: python benchmarks/import_time.py [--runs 7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "tests" / "support" / "comfyui_standin.py"

PACK_SNIPPET = """
import sys, time
sys.path.insert(0, {support!r})
import comfyui_standin as s
from pathlib import Path
s.install_standins(Path({root!r}))
t = time.perf_counter()
s.load_like_comfyui(Path({pack!r}))
print(time.perf_counter() - t)
"""
AIOHTTP_SNIPPET = "import time\nt = time.perf_counter()\nimport aiohttp\nprint(time.perf_counter() - t)\n"


def timed(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pack = Path(tmp) / "custom_nodes" / "lora-studio"
        shutil.copytree(REPO, pack, ignore=shutil.ignore_patterns(".venv", ".git", "tests", "__pycache__", "docs"))
        # The stand-ins import aiohttp before the pack (as ComfyUI's server does); time what the
        # pack adds on top by loading it after the stand-ins are in place.
        code = PACK_SNIPPET.format(support=str(STANDIN.parent), root=tmp, pack=str(pack))
        pack_times, aio_times = [], []
        for _ in range(args.runs):
            aio_times.append(timed(AIOHTTP_SNIPPET))
            pack_times.append(timed(code))
    pack_s, aio_s = statistics.median(pack_times), statistics.median(aio_times)
    print(f"pack load (ComfyUI-style, after aiohttp is loaded): median {pack_s * 1000:.1f} ms over {args.runs} runs")
    print(f"bare `import aiohttp`:                              median {aio_s * 1000:.1f} ms over {args.runs} runs")
    print(f"ratio pack / aiohttp: {pack_s / aio_s:.2f}")


if __name__ == "__main__":
    main()
