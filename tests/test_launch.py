"""Launching a chapter from the book: the notebooks the Colab button opens, and the links to them.

* notebooks/<chapter>.ipynb is what `make notebooks` writes from book/<chapter>.md (regenerated here and
  compared, so a chapter edited without `make notebooks` fails, and `make notebooks` fixes it);
* the repository URL is filled in from _config.yml, and no chapter source writes it out itself;
* the book's Colab buttons point to notebooks/<chapter>.ipynb, and every launch link opens a file of this
  repository: the rules are tested here on synthetic pages; scripts/check_html.py applies them to the built book.
"""
from __future__ import annotations

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def mk():
    return load_script("make_notebooks")


@pytest.fixture(scope="module")
def chapters():
    return load_script("bookutil").notebook_chapters()


def test_notebooks_are_in_sync_with_the_chapters(mk):
    problems = mk.stale()
    assert not problems, "run `make notebooks`:\n" + "\n".join(problems)


def test_conversion_keeps_every_cell_and_fills_in_the_url(mk, chapters):
    import jupytext

    url = mk.repo_url()
    assert url.startswith("https://github.com/")
    for src in chapters:
        nb = mk.convert(src, url)
        ref = jupytext.read(src)
        assert [c["cell_type"] for c in nb["cells"]] == [c.cell_type for c in ref.cells], src.name
        for got, want in zip(nb["cells"], ref.cells):
            assert "".join(got["source"]) == want.source.replace(mk.fill_repo_url.__globals__["REPO_URL_MARKER"], url)
            assert got.get("metadata", {}).get("tags", []) == want.metadata.get("tags", [])
        assert "jupytext" not in nb["metadata"] and nb["metadata"]["kernelspec"]["name"] == "python3"
        assert all(c.get("outputs", []) == [] for c in nb["cells"])
        # the conversion is deterministic (what --check relies on)
        assert mk.render(nb) == mk.render(mk.convert(src, url))


def test_no_chapter_writes_out_the_repository_url(mk, chapters):
    url = mk.repo_url()
    bb = load_script("build_book")
    for src in chapters:
        text = src.read_text(encoding="utf-8")
        assert url not in text, f"{src.name} writes the repository URL; write {bb.REPO_URL_MARKER} (from _config.yml)"


def test_setup_cell_installs_the_pinned_requirements_from_the_configured_url(mk, chapters):
    url = mk.repo_url()
    for src in chapters:
        nb = mk.convert(src, url)
        code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        setup = code[1]
        assert f"git clone -q --depth 1 {url} posym-src" in setup, src.name
        assert "pip install -q -r posym-src/requirements.txt" in setup, src.name


def test_colab_link_rewrite():
    ext = load_script("posym_sphinx")
    base = "https://colab.research.google.com/github/posym/posym/blob/main"
    assert ext.notebook_link(f"{base}/book/data.ipynb", "book/data") == f"{base}/notebooks/data.ipynb"
    assert ext.notebook_link(f"{base}/data.ipynb", "data") == f"{base}/notebooks/data.ipynb"
    # another page's link is left alone
    assert ext.notebook_link(f"{base}/book/metric.ipynb", "book/data") == f"{base}/book/metric.ipynb"


def test_launch_link_rule_on_synthetic_links(tmp_path):
    ch = load_script("check_html")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "data.ipynb").write_text("{}")
    repo = "https://github.com/posym/posym"
    base = "https://colab.research.google.com/github/posym/posym/blob/main"
    ok = [f"{base}/notebooks/data.ipynb", "https://arxiv.org/abs/1"]
    assert ch.launch_link_problems("p.html", ok, tmp_path, repo) == []
    bad = ch.launch_link_problems("p.html", [f"{base}/book/data.ipynb"], tmp_path, repo)
    assert len(bad) == 1 and "book/data.ipynb" in bad[0] and "make notebooks" in bad[0]
    other = ch.launch_link_problems("p.html", [f"{base.replace('posym/posym', 'x/y')}/notebooks/data.ipynb"],
                                    tmp_path, repo)
    assert len(other) == 1 and "not in the repository" in other[0]


def test_missing_launch_buttons_on_synthetic_pages():
    ch = load_script("check_html")
    base = "https://colab.research.google.com/github/posym/posym/blob/main"
    page = lambda *links: ch.parse("".join(f'<a href="{a}">x</a>' for a in links))
    pages = {"book/data.html": page(f"{base}/notebooks/data.ipynb"),
             "book/metric.html": page(f"{base}/notebooks/data.ipynb"),  # opens another chapter's notebook
             "book/roles.html": page("https://arxiv.org/abs/1"),
             "book/intro.html": page(),                                 # not a chapter notebook
             "index.html": page()}
    bad = ch.missing_launch_buttons(pages, {"data", "metric", "roles"})
    assert [b.split(":")[0] for b in bad] == ["book/metric.html", "book/roles.html"]
    assert "notebooks/metric.ipynb" in bad[0] and "found none" in bad[1]
    assert ch.missing_launch_buttons(pages, {"data"}) == []
