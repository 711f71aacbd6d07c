"""What decides the last bits of a CPU run: the torch build, the kernels ATen and oneDNN pick by instruction set,
and the thread count.

The same training or evaluation gives other floats on a CPU with other vector instructions (AVX2 against
AVX-512), under ``ATEN_CPU_CAPABILITY=default`` or with another number of threads; over hundreds of steps the
rounding grows into other test errors. A number recorded with its :func:`numerics_fingerprint` can therefore be
compared exactly only where :func:`same_numerics` holds, and within a measured tolerance elsewhere
(``scripts/cpu_spread.py`` measures the spread).

Example:
    >>> fingerprint = numerics_fingerprint(threads=1)
    >>> sorted(fingerprint)
    ['cpu', 'cpu_capability', 'isa', 'threads', 'torch']
    >>> same_numerics(fingerprint, fingerprint), same_numerics({**fingerprint, "threads": 2}, fingerprint)
    (True, False)
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import torch

__all__ = ["numerics_fingerprint", "same_numerics"]

# CPU flags that change which kernels oneDNN / ATen run (vector width, fused multiply-add, matrix units)
_KERNEL_FLAGS = ("avx", "fma", "amx")


@cache
def _cpu() -> tuple[str, str]:
    """The CPU's model name and the sorted kernel-relevant flags (Linux); elsewhere the platform's names."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), ""
    fields = dict(
        (key.strip(), value.strip()) for key, _, value in (line.partition(":") for line in info.splitlines()) if value
    )
    flags = sorted({f for f in fields.get("flags", "").split() if f.startswith(_KERNEL_FLAGS)})
    return fields.get("model name", platform.machine()), " ".join(flags)


def numerics_fingerprint(threads: int | None = None) -> dict[str, Any]:
    """What the last bits of a CPU computation depend on here: ``torch`` version, ``cpu`` model name, its
    kernel-relevant ``isa`` flags, ATen's ``cpu_capability`` (which ``ATEN_CPU_CAPABILITY`` can lower) and the
    intra-op ``threads`` (default: the current setting)."""
    cpu, isa = _cpu()
    return {
        "torch": str(torch.__version__),  # a plain str: TorchVersion does not load with weights_only=True
        "cpu": cpu,
        "isa": isa,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads() if threads is None else int(threads),
    }


def same_numerics(recorded: Mapping[str, Any], now: Mapping[str, Any] | None = None) -> bool:
    """Whether a number recorded with the fingerprint ``recorded`` can be expected bit for bit under ``now``
    (default: here and now, the current thread count included). A fingerprint that lacks a key never matches."""
    now = now or numerics_fingerprint()
    return all(key in recorded and recorded[key] == now[key] for key in now)
