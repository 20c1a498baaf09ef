#!/usr/bin/env python
"""Stage the executed chapters and build the HTML book (Jupyter Book 1, warnings are errors).

    python scripts/build_book.py --params smoke      # -> _build/html

Staging folder _build/book_src/ receives _config.yml, _toc.yml, references.bib, the local MathJax
(_mathjax/), the plain-markdown pages of book/ and, for every notebook chapter, the executed
notebook _build/executed/<params>/<name>.ipynb in place of its .md source. The book is then built
from there with `jupyter-book config sphinx` + `sphinx-build -W --keep-going`, so the build never
executes anything and never sees the unexecuted sources.

The repository URL is written once, in _config.yml (``repository.url``). The chapters' setup cells
say ``@REPO_URL@`` where they clone it; the staged notebooks (and the launchable copies in notebooks/,
``scripts/make_notebooks.py``) get the configured URL there. The book's own Sphinx extension
(scripts/posym_sphinx.py) is staged as _ext/.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bookutil import ROOT, book, die, toc_files

MATHJAX_ENTRY = Path("_mathjax") / "mathjax" / "tex-mml-chtml.js"
EXTENSION = Path(__file__).resolve().with_name("posym_sphinx.py")
REPO_URL_MARKER = "@REPO_URL@"


def repo_url(root: Path = ROOT) -> str:
    """The repository URL, from _config.yml (``repository.url``): the one place it is written."""
    import yaml

    cfg = yaml.safe_load((root / "_config.yml").read_text())
    url = ((cfg or {}).get("repository") or {}).get("url")
    if not url:
        die("_config.yml has no repository.url")
    return str(url).rstrip("/")


def fill_repo_url(nb: dict, url: str) -> int:
    """Put ``url`` where a code cell says @REPO_URL@ (in place); the number of cells changed."""
    n = 0
    for cell in nb.get("cells", []):
        src = cell.get("source", "")
        joined = "".join(src) if isinstance(src, list) else src
        if cell.get("cell_type") == "code" and REPO_URL_MARKER in joined:
            cell["source"] = joined.replace(REPO_URL_MARKER, url)
            n += 1
    return n


def stage(params: str, executed: Path, dest: Path) -> list[str]:
    if not (ROOT / MATHJAX_ENTRY).is_file():
        die(f"{MATHJAX_ENTRY} is missing: run `make mathjax` first")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml", "references.bib"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "_mathjax", dest / "_mathjax")
    (dest / "_ext").mkdir()
    shutil.copy2(EXTENSION, dest / "_ext" / EXTENSION.name)
    url = repo_url()
    staged = []
    notebook_sources = set()
    for f in toc_files():
        src = ROOT / f"{f}.md"
        if not src.is_file():
            ipynb = ROOT / f"{f}.ipynb"
            if ipynb.is_file():
                die(f"{ipynb.relative_to(ROOT)}: chapters are MyST markdown notebooks (.md), not .ipynb")
            die(f"_toc.yml lists {f!r} but {src.relative_to(ROOT)} does not exist")
        if book.is_notebook_source(src):
            notebook_sources.add(src.resolve())
            run = executed / f"{src.stem}.ipynb"
            if not run.is_file():
                die(f"{run.relative_to(ROOT) if run.is_relative_to(ROOT) else run} is missing: "
                    f"run `make chapters PARAMS={params}` first")
            if run.stat().st_mtime < src.stat().st_mtime:
                print(f"[html] warning: {run.name} is older than {src.relative_to(ROOT)}; "
                      f"re-run `make chapters PARAMS={params}`", file=sys.stderr)
            target = dest / Path(f).with_suffix(".ipynb")
            staged.append(f"{f}.ipynb (executed, {params})")
        else:
            run = src
            target = dest / f"{f}.md"
            staged.append(f"{f}.md")
        target.parent.mkdir(parents=True, exist_ok=True)
        if run.suffix == ".ipynb":
            nb = json.loads(run.read_text(encoding="utf-8"))
            fill_repo_url(nb, url)
            target.write_text(json.dumps(nb, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            shutil.copystat(run, target)
        else:
            shutil.copy2(run, target)
    # other assets of book/ (images, data files used by pages), never the notebook sources
    for path in (ROOT / "book").rglob("*"):
        if path.is_dir() or path.suffix in (".md", ".ipynb") or "_build" in path.parts:
            continue
        if path.resolve() in notebook_sources:
            continue
        target = dest / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return staged


def build(src: Path, out: Path) -> None:
    jb = Path(sys.executable).with_name("jupyter-book")
    subprocess.run([str(jb), "config", "sphinx", str(src)], check=True, stdout=subprocess.DEVNULL)
    if out.exists():
        shutil.rmtree(out)
    doctrees = src / "_doctrees"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           "-d", str(doctrees), str(src), str(out)]
    print("[html] " + " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)), flush=True)
    env = dict(os.environ)  # the local extension (_ext/posym_sphinx.py) must be importable by sphinx-build
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src / "_ext"), env.get("PYTHONPATH", "")) if p)
    r = subprocess.run(cmd, env=env)
    if r.returncode != 0:
        die(f"the HTML build failed (warnings are errors); see the messages above (rc={r.returncode})",
            r.returncode)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="smoke", help=f"which executed set to render: {', '.join(book.SCALES)}")
    ap.add_argument("--executed", type=Path, help="folder of executed notebooks (default _build/executed/<params>)")
    ap.add_argument("--stage", type=Path, default=ROOT / "_build" / "book_src")
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "html")
    args = ap.parse_args(argv)
    if args.params not in book.SCALES:
        die(f"unknown parameter set PARAMS={args.params!r}; choose one of {', '.join(book.SCALES)}")
    t0 = time.perf_counter()
    staged = stage(args.params, args.executed or ROOT / "_build" / "executed" / args.params, args.stage)
    print("[html] staged: " + ", ".join(staged), flush=True)
    build(args.stage, args.out)
    (args.out / ".posym-params").write_text(args.params + "\n")
    print(f"[html] built {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out} "
          f"from the {args.params!r} chapters in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
