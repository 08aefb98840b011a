"""The fixed set of runs whose keys and metrics no refactor may move (``tests/data/pins.json``).

``python tests/pins.py`` rewrites the file from the code as it is; ``test_layers.py`` compares the
code against it. Rewrite it only for a change that means to move numbers, and say so. Keys are the
same on every machine; metrics are bitwise only on the kind of machine that wrote them (its
instruction set picks the matmul kernels, which round differently), recorded beside them.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

PINS = Path(__file__).parent / "data" / "pins.json"
RUNS = (
    ("cmvae", "debcm", {}),
    ("cmvae", "none", {"test_set": "matching"}),
    ("dual_vae", "ips", {}),
    ("dscmr", "du+label_distill", {"setting": "ugc+pgc"}),
    ("cmvae", "decrs", {}),
    ("uwml", "calibration", {"seed": 3}),
)


def machine() -> dict[str, str]:
    """What decides the last bits of a run: the CPU's vector instructions and the libraries."""
    import numpy
    import torch

    from benchkit.options import cpu_flags

    isa = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    return {
        "isa": " ".join(isa) or platform.machine(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }


def pinned_runs() -> dict[str, dict]:
    """Each pinned run's key and metrics, as floats' exact hex (bitwise)."""
    from benchkit.api import run

    out = {}
    for backbone, debias, options in RUNS:
        res = run(backbone, debias, preset="tiny", epochs=2, threads=1, precision="fp32", **options)
        name = "+".join([backbone, debias, *(f"{k}={v}" for k, v in sorted(options.items()))])
        out[name] = {"key": res.key, "metrics": {k: float(v).hex() for k, v in res.metrics.items()}}
    return out


if __name__ == "__main__":
    pins = {"machine": machine(), "runs": pinned_runs()}
    PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
    sys.stdout.write(f"wrote {PINS}\n")
