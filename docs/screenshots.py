"""Regenerate the screenshots of the three report pages shown in the docs.

Runs the real commands on the shipped samples (``opis evaluate``, ``opis
compare``, ``opis calibrate``, each with ``--report``), opens each page in
headless Chromium (Debian's, driven by Playwright: the ``browser`` extra, no
browser download) and saves the first screen (1200 x 900) as a small
palette PNG where the docs reference it, with the evaluate report's own
utility and distance figures shown in the concept pages::

    python docs/screenshots.py            # from the repository root
    python docs/screenshots.py --out /tmp/shots   # somewhere else

Needs ``pip install '.[browser]'`` and ``apt-get install -y chromium``.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data"
VIEWPORT = {"width": 1200, "height": 900}

#: figures of the evaluate run shown in the concept pages: docs/img name -> report PNG
FIGURES = {"utility-weak.png": "utility.png", "distances-weak.png": "distances.png"}

#: file in docs/img -> (the command after ``opis``, the page it writes in DIR)
SHOTS = {
    "report-screenshot.png": (
        ["evaluate", "sample_data/digits_weak.parquet", "--report", "DIR"], "report.html"),
    "compare-screenshot.png": (
        ["compare", "sample_data/digits_weak.parquet", "sample_data/digits_strong.parquet",
         "--report", "DIR"], "compare.html"),
    "calibrate-screenshot.png": (
        ["calibrate", "sample_data/wordnet_hyponyms.parquet", "--folds", "5", "--target",
         "far:0.01", "--report", "DIR"], "calibrate.html"),
}


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("Chromium is needed: apt-get update && apt-get install -y chromium")


def small_png(png: bytes) -> bytes:
    """A palette PNG (256 colours, optimised): the page is flat colours and text."""
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    im = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    im.save(out, format="PNG", optimize=True)
    return out.getvalue()


def run_opis(args: list[str], folder: Path) -> Path:
    """``opis ARGS`` from the repository root, ``DIR`` replaced by ``folder``."""
    cmd = [sys.executable, "-m", "opis_cli.cli", *[str(folder) if a == "DIR" else a for a in args],
           "-q"]
    print("$ opis " + " ".join(args).replace("DIR", "report/"), file=sys.stderr)
    done = subprocess.run(cmd, cwd=ROOT)
    if done.returncode not in (0, 1):  # 1: a gate failed (still a page)
        sys.exit(f"opis {' '.join(args)} failed with exit code {done.returncode}")
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img",
                    help="folder for the PNGs (default: docs/img)")
    ap.add_argument("--only", choices=sorted(SHOTS), action="append",
                    help="only this screenshot (repeatable)")
    opts = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    opts.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage"])
        for name in opts.only or SHOTS:
            args, page_name = SHOTS[name]
            folder = run_opis(args, Path(tmp) / name.split(".")[0])
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
            page.goto((folder / page_name).as_uri())
            page.wait_for_load_state("load")
            png = small_png(page.screenshot(full_page=False))
            page.close()
            (opts.out / name).write_bytes(png)
            print(f"wrote {opts.out / name} ({len(png):,} bytes)", file=sys.stderr)
            if page_name == "report.html":  # the figures of the same run, as the report drew them
                for doc_name, fig in FIGURES.items():
                    shutil.copyfile(folder / fig, opts.out / doc_name)
                    print(f"wrote {opts.out / doc_name}", file=sys.stderr)
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
