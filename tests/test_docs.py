"""The documentation site: ``mkdocs build --strict`` passes, every page of the navigation exists and is built,
the API reference covers every public module, and the README links into the site."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SRC = ROOT / "src"


def _yaml():
    # PyYAML comes with mkdocs, which the test extra installs: its absence is a broken install, not a skip.
    if importlib.util.find_spec("yaml") is None or importlib.util.find_spec("mkdocs") is None:
        pytest.fail('mkdocs is not installed; it is part of the test extra: pip install -e ".[test]"')
    import yaml

    return yaml


def _nav_pages(nav: list) -> list[tuple[str, str]]:
    """``(title, path)`` of every page in a MkDocs ``nav`` (sections flattened)."""
    pages = []
    for entry in nav:
        for title, value in entry.items():
            pages += _nav_pages(value) if isinstance(value, list) else [(title, value)]
    return pages


def _config() -> dict:
    return _yaml().safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def _public_modules() -> list[str]:
    """Dotted names of the modules under src/stn that the API reference must document."""
    names = []
    for path in (SRC / "stn").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        # The command line is documented on its own page (docs/cli.md), from its --help.
        if not any(p.startswith("_") for p in parts) and parts[:2] != ("stn", "cli"):
            names.append(".".join(parts))
    return sorted(names)


def _docs_module(name: str):
    _yaml()  # the docs tooling imports mkdocs / griffe: fail clearly when they are missing
    spec = importlib.util.spec_from_file_location(f"docs_{name}", DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docstrings_are_rewritten_for_mkdocstrings() -> None:
    to_markdown = _docs_module("griffe_rst").to_markdown
    text = """Uses :func:`~stn.functional.warp` and :class:`stn.Foo`. A run folder::

    run/

Args:
    mode, padding_mode: see :func:`sample`.
        More about both.

Example:
    >>> [1, 2]
    [1, 2]
"""
    expected = """Uses `warp` and `stn.Foo`. A run folder:

    run/

Args:
    mode: see `sample`.
    padding_mode: see `sample`.
        More about both.

Examples:
    >>> [1, 2]
    [1, 2]"""
    assert to_markdown(text) == expected


def test_the_api_pages_list_every_public_module_of_a_package() -> None:
    hooks = _docs_module("hooks")
    assert "stn.data.idx" in hooks.public_modules("stn.data")
    assert not [m for m in hooks.public_modules("stn") if any(p.startswith("_") for p in m.split("."))]
    assert {"get", "names", "resolve"} <= set(hooks.own_members("stn.transforms"))
    assert "Affine" not in hooks.own_members("stn.transforms")  # imported, documented in its home module


def test_every_page_of_the_nav_exists() -> None:
    pages = _nav_pages(_config()["nav"])
    assert len(pages) >= 10, pages
    missing = [path for _, path in pages if not (DOCS / path).is_file()]
    assert not missing, f"pages in mkdocs.yml's nav that are not in docs/: {missing}"


def test_the_readme_links_to_every_guide_page_of_the_site() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(docs/([\w/.-]+\.md)(?:#[\w-]+)?\)", readme))
    guides = {path for _, path in _nav_pages(_config()["nav"]) if not path.startswith("api/")}
    assert not guides - linked, f"README.md does not link to the site pages {sorted(guides - linked)}"
    assert not {p for p in linked if not (DOCS / p).is_file()}, "README.md links to docs pages that do not exist"


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_the_quick_start_runs(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    match = re.search(r"## Quick start\n\n```python\n(.*?)```", text, re.S)
    assert match, f"{page} has no '## Quick start' Python block"
    namespace: dict = {}
    exec(compile(match.group(1), f"{page} quick start", "exec"), namespace)
    assert tuple(namespace["y"].shape) == (8, 1, 21, 21)
    assert [tuple(c.shape) for c in namespace["crops"]] == [(2, 3, 224, 224)] * 2


@pytest.mark.slow
def test_mkdocs_build_is_strict_clean_and_documents_every_module(tmp_path: Path) -> None:
    _yaml()
    site = tmp_path / "site"
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{log[-6000:]}"

    for _, path in _nav_pages(_config()["nav"]):
        built = site / ("index.html" if path == "index.md" else Path(path).with_suffix("") / "index.html")
        assert built.is_file(), f"{path} was not built ({built})"

    api = "".join(p.read_text(encoding="utf-8") for p in (site / "api").rglob("*.html"))
    anchors = set(re.findall(r'id="(stn[\w.]*)"', api))
    undocumented = [m for m in _public_modules() if m not in anchors]
    assert not undocumented, f"modules missing from the API reference: {undocumented}"
    # The hook publishes results/ with the site, so the figures the reproductions page shows are there.
    assert (site / "results" / "colocalization" / "boxes.png").is_file()
