"""MkDocs hooks (see ``hooks:`` in mkdocs.yml).

* Publish the repository's ``results/`` folder with the site. The pages link run outputs as ``../results/...``
  so that the links also work when the Markdown is read in the repository; ``results/`` lies outside
  ``docs_dir``, so its files are added to the site under ``results/`` and those links are rewritten to point
  there. ``mkdocs build --strict`` then checks them like any other link.
* ``::: stn.pkg.*`` in a page stands for the package's docstring followed by one mkdocstrings directive per
  public module under it (found in ``src/``), so the API reference follows modules as they are added, moved or
  removed, and documents each object once, in its home module (a package's re-exports are not repeated).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
RESULTS = "results"
_RESULTS_LINK = re.compile(r"\]\((?:\.\./)+" + RESULTS + "/")
_PACKAGE = re.compile(r"^::: ([\w.]+)\.\*[ \t]*$", re.M)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for path in sorted((ROOT / RESULTS).rglob("*")):
        if path.is_file():
            src_uri = path.relative_to(ROOT).as_posix()
            files.append(File(src_uri, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def public_modules(package: str) -> list[str]:
    """Dotted names of the public modules under ``package`` (no part starting with ``_``), sorted."""
    root = SRC.joinpath(*package.split("."))
    names = set()
    for path in root.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if len(parts) > len(package.split(".")) and not any(part.startswith("_") for part in parts):
            names.add(".".join(parts))
    return sorted(names)


def own_members(package: str) -> list[str]:
    """Public names that ``package``'s ``__init__.py`` defines itself (not those it imports)."""
    init = SRC.joinpath(*package.split("."), "__init__.py")
    names = []
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return [n for n in names if not n.startswith("_")]


def _expand_package(match: re.Match) -> str:
    package = match.group(1)
    members = own_members(package)
    listed = "\n".join(f"        - {name}" for name in members)
    selection = f"\n{listed}" if members else " false"
    directives = [f"::: {package}\n    options:\n      members:{selection}\n"]
    directives += [f"::: {name}\n" for name in public_modules(package)]
    return "\n".join(directives)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    depth = page.file.src_uri.count("/")
    markdown = _RESULTS_LINK.sub("](" + "../" * depth + RESULTS + "/", markdown)
    return _PACKAGE.sub(_expand_package, markdown)
