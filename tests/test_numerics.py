"""stn.numerics: the fingerprint under which recorded floats repeat, and the recorded-number tests under a second
kernel set (issue #22: CI on any machine exercises ATen's default kernels besides its own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stn.models import list_pretrained
from stn.numerics import numerics_fingerprint, same_numerics

ROOT = Path(__file__).resolve().parents[1]
# The tests that compare training / evaluation floats with recorded ones.
RECORDED_NUMBER_TESTS = [
    "tests/engine/test_pinned.py::test_a_short_table1_run_gives_the_numbers_of_the_previous_trainer",
    "tests/cli/test_eval_pretrained.py::test_eval_pretrained_on_the_fixed_subset_gives_the_stored_numbers",
    "tests/models/test_pretrained.py::test_the_loaded_model_scores_the_stored_error_on_the_fixed_subset",
]


def test_the_fingerprint_names_what_the_last_bits_depend_on() -> None:
    here = numerics_fingerprint()
    assert here["torch"] == torch.__version__ and here["threads"] == torch.get_num_threads()
    assert here["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert numerics_fingerprint(threads=3)["threads"] == 3


@pytest.mark.parametrize("key", ["torch", "cpu", "isa", "cpu_capability", "threads"])
def test_any_difference_or_missing_key_means_other_numerics(key: str) -> None:
    here = numerics_fingerprint()
    assert same_numerics(here, here)
    assert not same_numerics({**here, key: "elsewhere"}, here)
    assert not same_numerics({k: v for k, v in here.items() if k != key}, here)


def test_the_current_thread_count_is_part_of_here() -> None:
    threads = torch.get_num_threads()
    assert same_numerics(numerics_fingerprint()) and not same_numerics(numerics_fingerprint(threads=threads + 1))


@pytest.mark.slow
def test_the_recorded_number_tests_pass_under_atens_default_kernels(shared_data: Path) -> None:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "STN_SHARED_DATA": str(shared_data)}
    env.pop("PYTEST_XDIST_WORKER", None)
    probe = [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"]
    assert subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout.strip() == "DEFAULT"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", *RECORDED_NUMBER_TESTS]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    expected = len(RECORDED_NUMBER_TESTS) - 1 + len(list_pretrained())  # the eval test runs once per shipped entry
    assert done.returncode == 0 and done.stdout.rstrip().splitlines()[-1].startswith(f"{expected} passed in "), (
        done.stdout[-3000:]
    )
