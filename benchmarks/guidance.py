"""Classifier-free guidance and inpainting, scored by bfn's MNIST classifier.

    python -m benchmarks.guidance RUN [--scales 0,1,2,4] [--per-label 50] [--steps 100] [--sampler paper]
    python -m benchmarks.guidance RUN --inpaint [--n 200]   # also (or only, with --no-guidance) inpainting

Guidance: for each scale w, draws `--per-label` samples of every label 0-9 (one seed for all scales) and reports
the accuracy of "asked label == the classifier's label", the mean classifier confidence, and the diversity /
quality metrics of `bfn.evaluation.quality.sample_quality` (classifier-feature FID, precision/recall) against the
run's test split. Works for class-conditional BFN and DDPM runs (e.g. mnist-discrete-cond, mnist-ddpm-cond).

Inpainting (BFN runs on binarized MNIST): the top half of `--n` test digits is observed, the model draws the
bottom half; reports how often the classifier recognises the true digit in the completions, for the "exact" and
"flow" methods of `bfn.samplers.inpaint` and, as floors, for the half-blank image and the full test digit.

Writes benchmarks/results/guidance_<run name>.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from benchmarks import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.guidance", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run", help="run directory of a class-conditional model (e.g. runs/mnist-discrete-cond)")
    p.add_argument("--scales", default="0,1,2,4", help="guidance scales w, comma separated")
    p.add_argument("--per-label", type=int, default=50, help="samples per label and scale")
    p.add_argument("--steps", type=int, default=100, help="sampling steps")
    p.add_argument("--sampler", default="paper", help="sampler name")
    p.add_argument("--inpaint", action="store_true", help="also score inpainting of the top half of test digits")
    p.add_argument("--no-guidance", action="store_true", help="skip the guidance part")
    p.add_argument("--n", type=int, default=200, help="inpainting: test digits")
    p.add_argument("--seed", type=int, default=0, help="seed of the samplers and of the metrics")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    p.add_argument("--out", default=str(common.RESULTS), help="folder for the JSON file")
    return p.parse_args(argv)


def guidance_table(run: Any, scales: list[float], *, per_label: int, steps: int, sampler: str, seed: int,
                   device: str) -> list[dict[str, Any]]:
    """One row per scale: accuracy, confidence, FID and friends, seconds."""
    from bfn.evaluation.classifier import load_classifier, predict
    from bfn.evaluation.compare import display_samples, reference_images
    from bfn.evaluation.quality import sample_quality

    classifier = load_classifier(device=device)
    reference = reference_images(run, limit=None, seed=seed)
    labels = torch.arange(run.model.num_labels, device=device).repeat_interleave(per_label)
    rows = []
    for w in scales:
        gen = torch.Generator(device=device).manual_seed(seed)
        t0 = time.perf_counter()
        x = run.model.sample(labels.shape[0], steps, sampler=sampler, generator=gen, cond=labels, guidance=w)
        seconds = time.perf_counter() - t0
        images = display_samples(run, x)
        _, logits = predict(classifier, images)
        hit = (logits.argmax(1) == labels.cpu()).float()
        q = sample_quality(images, reference, classifier=classifier, seed=seed, device=device)
        per_class = hit.reshape(-1, per_label).mean(1).tolist()
        rows.append({"guidance": w, "n": labels.shape[0], "accuracy": float(hit.mean()),
                     "accuracy_per_label": per_class, "fid": q["fid"], "precision": q["precision"],
                     "recall": q["recall"], "coverage": q["coverage"], "confidence": q["confidence"],
                     "seconds": seconds})
        print(f"w = {w:g}: accuracy {hit.mean():.3f}, FID {q['fid']:.2f}, recall {q['recall']:.2f} "
              f"({seconds:.0f} s)", flush=True)
    return rows


def inpainting_table(run: Any, *, n: int, steps: int, sampler: str, seed: int, device: str) -> dict[str, Any]:
    """Classifier recognition of the true digit: full digit, top half only, and completions by each method."""
    from bfn.evaluation.classifier import load_classifier, mnist_split, predict

    classifier = load_classifier(device=device)
    images, labels = mnist_split("test")
    x = (images[:n] >= 0.5).long().to(device)
    mask = torch.zeros(1, 28, 28, dtype=torch.bool, device=device)
    mask[:, :14] = True

    def acc(batch: torch.Tensor) -> float:
        return float((predict(classifier, batch.float().cpu())[1].argmax(1) == labels[:n]).float().mean())

    out: dict[str, Any] = {"n": n, "steps": steps, "sampler": sampler, "observed": "top half",
                           "full_digit": acc(x), "top_half_only": acc(x * mask)}
    for method in ("exact", "flow"):
        gen = torch.Generator(device=device).manual_seed(seed)
        t0 = time.perf_counter()
        s = run.model.sample(n, steps, sampler=sampler, generator=gen, inpaint=(x, mask.expand_as(x)),
                             inpaint_method=method)
        out[method] = acc(s)
        out[f"{method}_kept_observed"] = bool(torch.equal(s[mask.expand_as(x)], x[mask.expand_as(x)]))
        out[f"{method}_seconds"] = time.perf_counter() - t0
        print(f"inpainting ({method}): classifier finds the true digit in {out[method]:.3f}", flush=True)
    return out


def markdown(name: str, result: dict[str, Any]) -> str:
    lines = []
    if result.get("guidance"):
        g = result["settings"]
        lines += [f"### {name}: classifier-free guidance ({g['per_label']} samples per label, {g['sampler']} "
                  f"sampler, {g['steps']} steps)", "",
                  "| w | accuracy | FID | precision | recall | coverage | confidence | s |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in result["guidance"]:
            lines.append(f"| {r['guidance']:g} | {r['accuracy']:.3f} | {r['fid']:.2f} | {r['precision']:.2f} | "
                         f"{r['recall']:.2f} | {r['coverage']:.2f} | {r['confidence']:.3f} | {r['seconds']:.0f} |")
    if result.get("inpaint"):
        r = result["inpaint"]
        lines += ["", f"### {name}: inpainting, top half observed ({r['n']} test digits, {r['sampler']}, "
                  f"{r['steps']} steps): classifier finds the true digit", "",
                  "| full digit | top half only | exact | flow |", "| ---: | ---: | ---: | ---: |",
                  f"| {r['full_digit']:.3f} | {r['top_half_only']:.3f} | {r['exact']:.3f} | {r['flow']:.3f} |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bfn.evaluation.runs import load_run

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = load_run(args.run, device=args.device)
    result: dict[str, Any] = {"run": str(args.run), "settings": {
        "per_label": args.per_label, "steps": args.steps, "sampler": args.sampler, "seed": args.seed,
        "device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__}}
    if not args.no_guidance:
        scales = [float(s) for s in args.scales.split(",")]
        result["guidance"] = guidance_table(run, scales, per_label=args.per_label, steps=args.steps,
                                            sampler=args.sampler, seed=args.seed, device=args.device)
    if args.inpaint:
        result["inpaint"] = inpainting_table(run, n=args.n, steps=args.steps, sampler=args.sampler, seed=args.seed,
                                             device=args.device)
    path = common.write_json(args.out, f"guidance_{run.name}", result)
    print(markdown(run.name, result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
