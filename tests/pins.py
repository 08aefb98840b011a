"""The fixed set of runs whose keys and metrics no refactor may move (``tests/data/pins.json``).

``python tests/pins.py`` rewrites the file from the code as it is; ``test_layers.py`` compares the
code against it. Rewrite it only for a change that means to move numbers, and say so.
"""

from __future__ import annotations

import json
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


def pinned_runs() -> dict[str, dict]:
    """Each pinned run's key and metrics, as floats' exact hex (bitwise)."""
    from benchkit.api import run

    out = {}
    for backbone, debias, options in RUNS:
        res = run(backbone, debias, preset="tiny", epochs=2, threads=1, **options)
        name = "+".join([backbone, debias, *(f"{k}={v}" for k, v in sorted(options.items()))])
        out[name] = {"key": res.key, "metrics": {k: float(v).hex() for k, v in res.metrics.items()}}
    return out


if __name__ == "__main__":
    PINS.write_text(json.dumps(pinned_runs(), indent=1, sort_keys=True) + "\n")
    sys.stdout.write(f"wrote {PINS}\n")
