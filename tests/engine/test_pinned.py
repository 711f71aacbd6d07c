"""The engine reproduces, step for step, a Table 1 run of the trainer it replaced (issue #12: the same seed and
recipe must give the same numbers). The numbers were computed with the previous trainer (commit d59a546) on one
CPU thread: ST-CNN Aff on RTS, 2,048 training / 512 test digits, 60 steps of 64 at lr 0.1, seed 0.

The previous trainer took the classifier's input gradient from oneDNN; stn.modules.conv.Conv2d now computes it with
ATen's im2col kernel (3x faster, equal to ~1e-6 relative, tests/modules/test_conv.py). This near-chance run flips
a few test digits on such rounding (82.6% -> 84.0% error), so the comparison with the previous trainer runs on the
oneDNN route.

The previous trainer's numbers came from a CPU we no longer have; other CPUs (and ``ATEN_CPU_CAPABILITY``) pick
other kernels, and 60 steps carry their rounding into the third decimal. ``scripts/cpu_spread.py`` measured, over
``ATEN_CPU_CAPABILITY`` default / avx2 / avx512 at 1 and 2 threads on an AVX-512 Xeon, plus an AVX2-only EPYC (issue
#22): test error 0.826-0.832 (3 of 512 digits), test loss within 3.1e-4 and train loss within 1.9e-4 of the previous
trainer's. The tolerances are twice that; a 1% change of the learning rate (0.099) already moves the train loss by
2.1e-3 and the error by 8 digits, so the test still catches a changed recipe. Where the fingerprint of a recording
matches this machine (:func:`stn.numerics.same_numerics`), the comparison is exact."""

from __future__ import annotations

import pytest
import torch

from stn.engine.config import TrainConfig
from stn.experiments._common import make_trainer
from stn.numerics import same_numerics

BEFORE = {"test_error": 0.826171875, "test_loss": 2.2488393783569336, "train_loss": 2.2492742027555193}
TOLERANCE = {"test_error": 6 / 512, "test_loss": 6e-4, "train_loss": 4e-4}
# Exact recordings of this run, with the numerics they repeat under (scripts/cpu_spread.py prints them).
RECORDED = [
    (
        {
            "torch": "2.13.0+cpu",
            "cpu": "Intel(R) Xeon(R) Processor",
            "isa": "amx_bf16 amx_int8 amx_tile avx avx2 avx512_bf16 avx512_bitalg avx512_fp16 avx512_vbmi2 avx512_vnni "
            "avx512_vpopcntdq avx512bw avx512cd avx512dq avx512f avx512ifma avx512vbmi avx512vl avx_vnni fma",
            "cpu_capability": "AVX512",
            "threads": 1,
        },
        {"test_error": 0.83203125, "test_loss": 2.2485439777374268, "train_loss": 2.2492249522890364},
    ),
]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # oneDNN's results depend on the number of threads
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def onednn_input_gradient(monkeypatch):
    from stn.modules.conv import Conv2d

    monkeypatch.setattr(Conv2d, "_single_channel_route", lambda self, x: False)


def test_a_short_table1_run_gives_the_numbers_of_the_previous_trainer(
    shared_data, tmp_path, one_thread, onednn_input_gradient
):
    config = TrainConfig(iterations=60, batch_size=64, lr=0.1, seed=0, device="cpu")
    trainer = make_trainer(
        "rts", "st-cnn-aff", config, tmp_path, num_train=2048, num_test=512,
        data_dir=str(shared_data / "mnist"), progress=False, figures=False,
    )  # fmt: skip
    result = trainer.fit()
    got = {
        "test_error": result.summary["test_error"],
        **{k: trainer.history[-1][k] for k in ("test_loss", "train_loss")},
    }
    exact = [numbers for fingerprint, numbers in RECORDED if same_numerics(fingerprint)]
    if exact:
        assert got == exact[0]
    for key, value in BEFORE.items():
        assert got[key] == pytest.approx(value, abs=TOLERANCE[key]), key
