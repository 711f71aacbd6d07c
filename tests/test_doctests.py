"""Every docstring example in ``src/stn`` runs and prints what it shows (one case per module).

Examples run in a fresh temporary working directory so that the ones that write files leave nothing in the
repository. A module whose optional dependency (h5py, timm, onnx, ...) is not installed is skipped with the reason,
whether the import fails when the module is imported or when an example runs.
"""

from __future__ import annotations

import doctest
import importlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest

import stn

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# ``python -m stn`` runs the command line when imported; it holds no examples.
NOT_IMPORTABLE = {f"{stn.__name__}.__main__"}


def _module_names() -> list[str]:
    # Walks the files, not pkgutil: pkgutil skips folders without __init__.py (namespace subpackages).
    root = Path(stn.__file__).parent
    names = set()
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names - NOT_IMPORTABLE)


def _missing_dependency(err: BaseException | None) -> str | None:
    """The third-party module whose absence caused ``err`` (directly or as its cause), else None."""
    while err is not None:
        if isinstance(err, ModuleNotFoundError) and err.name and err.name.split(".")[0] != stn.__name__:
            return err.name
        err = err.__cause__
    return None


class _Runner(doctest.DocTestRunner):
    """A doctest runner that also remembers which optional dependencies the failing examples lacked."""

    def __init__(self) -> None:
        super().__init__(optionflags=OPTIONS)
        self.missing: set[str] = set()

    def report_unexpected_exception(
        self, out: Callable[[str], object], test: doctest.DocTest, example: doctest.Example, exc_info: tuple
    ) -> None:
        name = _missing_dependency(exc_info[1])
        if name is not None:
            self.missing.add(name)
        super().report_unexpected_exception(out, test, example, exc_info)


MODULES = _module_names()


def test_the_package_walk_finds_the_modules() -> None:
    # Guards the parametrisation below: an empty or partial walk would pass vacuously.
    assert {"stn.coords", "stn.functional", "stn.transforms.tps", "stn.models.registry", "stn.data.idx"} <= set(MODULES)


def test_a_failing_example_fails_and_a_missing_dependency_is_recognised() -> None:
    # The runner must report a wrong output as a failure; otherwise every case below would pass vacuously.
    parser = doctest.DocTestParser()
    runner = _Runner()
    wrong = parser.get_doctest(">>> 1 + 1\n3\n", {}, "wrong", "wrong.py", 0)
    runner.run(wrong, out=lambda _: None)
    missing = parser.get_doctest(">>> import no_such_module_xyz\n", {}, "missing", "missing.py", 0)
    runner.run(missing, out=lambda _: None)
    assert runner.summarize(verbose=False).failed == 2
    assert runner.missing == {"no_such_module_xyz"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if _missing_dependency(err) is not None:
            pytest.skip(f"{name} needs the optional dependency {err.name!r}, which is not installed")
        raise
    # Examples are collected from this module only: objects re-exported elsewhere are tested in their home module.
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name) if t.examples]
    if not tests:
        pytest.skip(f"{name} has no docstring examples")
    monkeypatch.chdir(tmp_path)
    runner = _Runner()
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    results = runner.summarize(verbose=False)
    if results.failed and runner.missing:
        pytest.skip(f"{name}: examples need the optional dependencies {sorted(runner.missing)}, not installed")
    summary = f"{results.failed} of {results.attempted} examples failed in {name}"
    assert results.failed == 0, f"{summary}:\n{report.getvalue()}"
