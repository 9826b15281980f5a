"""Is an RBM's AIS estimate converged? ln Z-hat of one run for several numbers of temperatures (100 chains each),
written to RUN/ais_check.json. AIS's ln Z-hat is biased low: if it still rises with more temperatures, the NLL
estimate F(x) + ln Z-hat is understated by at least the rise.

    python benchmarks/rbm_ais_check.py /work/runs/families/mnist-rbm 10000 30000
"""

from __future__ import annotations

import json
import sys

import torch

from bfn.models import from_pretrained


def main(run: str, counts: list[int]) -> None:
    torch.set_num_threads(1)
    model = from_pretrained(run)
    out = {}
    for k in counts:
        log_z, se = model.ais_log_z(k, 100, torch.Generator().manual_seed(1))
        out[k] = {"log_z": log_z, "delta_method_se": se}
        print(f"{k} temperatures: ln Z-hat {log_z:.2f} (delta-method s.e. {se:.2f})", flush=True)
    with open(f"{run}/ais_check.json", "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1], [int(a) for a in sys.argv[2:]] or [10_000, 30_000])
