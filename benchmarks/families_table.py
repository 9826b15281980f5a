"""The measured table of the lecture's families: reads the runs written by `benchmarks/families.sh` (their
metrics.jsonl, weights and eval.json) and prints a Markdown table; writes `results/families.json`.

    python benchmarks/families_table.py /work/runs/families [more run dirs ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from safetensors import safe_open

from bfn.evaluation.nll import read_eval

BUFFERS = ("step", "chains", "data_mean", "seen")  # the families' buffers: state, not parameters
OUT = Path(__file__).parent / "results" / "families.json"


def parameters(run: Path) -> int:
    """Trainable size: every tensor in the weights except buffers we know of (step counters, chains, means)."""
    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        names = [k for k in f.keys() if k.split(".")[-1] not in BUFFERS]  # noqa: SIM118
        return sum(_prod(f.get_slice(k).get_shape()) for k in names)


def _prod(shape: list[int]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def row(run: Path) -> dict:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    last = lines[-1]
    config = json.loads((run / "config.json").read_text())
    batch = yaml.safe_load((run / "config.yaml").read_text())["train"]["batch_size"]
    ev = read_eval(run)
    out = {"run": str(run), "family": config["model"]["type"], "data": config["data"]["kind"],
           "bins": config["data"].get("num_bins"), "parameters": parameters(run), "steps": config.get("step"),
           "train_seconds": last["elapsed_s"],
           "images_per_s": batch * config.get("step", 0) / last["elapsed_s"] if last["elapsed_s"] else None}
    out["nll"] = []
    full = run / "eval-elbo.json"  # a VAE's -ELBO on the whole test split (families.sh), beside IWAE on a subset
    for section in ([json.loads(full.read_text())["nll"]] if full.is_file() else []) + [ev.get("nll", {})]:
        out["nll"] += [{"bound": r["bound"], "kind": r.get("kind", r.get("likelihood")), "nats": r["nats"],
                        "se": r["nats_se"], "bits_per_dim": r["bits_per_dim"], "n_images": section["n_examples"]}
                       for r in section.get("results", {}).values()]
    q = ev.get("quality", {})
    if q:
        out["quality"] = {k: q.get(k) for k in ("fid", "kid", "kid_std", "precision", "recall", "label_entropy",
                                                 "n_samples", "sampling_steps", "wall_seconds")}
    return out


def markdown(rows: list[dict]) -> str:
    head = ("| run | family | data | params | steps in budget | images/s | NLL nats/image (± s.e.) | kind | "
            "classifier FID | KID | precision / recall |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        nll = "; ".join(f"{n['bound']}: {n['nats']:.2f} ± {n['se']:.2f} ({n['n_images']} images)"
                        for n in r["nll"]) or "none (no likelihood)"
        kind = ", ".join(sorted({str(n["kind"]) for n in r["nll"]})) or "none"
        q = r.get("quality") or {}
        fid = f"{q['fid']:.2f}" if q else "-"
        kid = f"{q['kid']:.4f} ± {q['kid_std']:.4f}" if q else "-"
        pr = f"{q['precision']:.2f} / {q['recall']:.2f}" if q else "-"
        data = "binary" if r["data"] == "discrete" else f"{r['bins']} bins"
        lines.append(f"| {Path(r['run']).name} | {r['family']} | {data} | {r['parameters'] / 1e6:.2f}M | {r['steps']} "
                     f"| {r['images_per_s']:.0f} | {nll} | {kind} | {fid} | {kid} | {pr} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    runs: list[Path] = []
    for a in argv or ["runs/families"]:
        p = Path(a)
        is_run = (p / "config.json").is_file()
        runs += [p] if is_run else sorted(d for d in p.iterdir() if (d / "config.json").is_file())
    rows = [row(r) for r in runs]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main(sys.argv[1:])
