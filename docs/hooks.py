"""MkDocs hooks (see ``hooks:`` in mkdocs.yml).

* Publish the repository's ``results/`` folder with the site. The pages link run outputs as ``../results/...``
  so that the links also work when the Markdown is read in the repository; ``results/`` lies outside
  ``docs_dir``, so its files are added to the site under ``results/`` and those links are rewritten to point
  there. ``mkdocs build --strict`` then checks them like any other link.
* ``::: stn.pkg.*`` in a page stands for the package's docstring followed by one mkdocstrings directive per
  public module under it (found in ``src/``), so the API reference follows modules as they are added, moved or
  removed, and documents each object once, in its home module (a package's re-exports are not repeated).
* An API directive for a module inside a folder without ``__init__.py`` is replaced by a note: griffe, which
  mkdocstrings uses, does not read namespace packages nested in a regular package and would fail the whole build.
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
_DIRECTIVE = re.compile(r"^::: ([\w.]+)\n((?:    .*\n)*)", re.M)
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
    for node in ast.parse(init.read_text(encoding="utf-8")).body if init.exists() else []:
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
    directives = [
        f"::: {package}\n    options:\n      members:\n{listed}\n"
        if members
        else f"::: {package}\n    options:\n      members: false\n"
    ]
    directives += [f"::: {name}\n" for name in public_modules(package)]
    return "\n".join(directives)


def _namespace_folder(dotted: str) -> Path | None:
    """The first package folder on the way to module ``dotted`` that lacks ``__init__.py``, else None."""
    parts = dotted.split(".")
    for depth in range(1, len(parts)):
        folder = SRC.joinpath(*parts[:depth])
        if folder.is_dir() and not (folder / "__init__.py").exists():
            return folder
    return None


def _directive(match: re.Match) -> str:
    folder = _namespace_folder(match.group(1))
    if folder is None:
        return match.group(0)
    where = folder.relative_to(ROOT).as_posix()
    return (
        f'!!! warning "`{match.group(1)}`: reference not generated"\n'
        f"    `{where}` has no `__init__.py`, and the documentation generator only reads regular packages. "
        f"Read the docstrings in `{where}/` meanwhile.\n\n"
    )


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    depth = page.file.src_uri.count("/")
    markdown = _RESULTS_LINK.sub("](" + "../" * depth + RESULTS + "/", markdown)
    markdown = _PACKAGE.sub(_expand_package, markdown)
    return _DIRECTIVE.sub(_directive, markdown)
