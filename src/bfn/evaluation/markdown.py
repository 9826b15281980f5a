"""The Markdown page of `bfn compare` (`render_markdown`), from the numbers `compare_runs` collected."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from bfn.viz.compare import EVOLUTION_K


def _num(value: Any, digits: int = 2) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    return f"{value:,.{digits}f}"


def _pm(value: Any, se: Any, digits: int) -> str:
    if not isinstance(se, int | float) or not math.isfinite(se):
        return _num(value, digits)
    return f"{_num(value, digits)} ± {_num(se, digits)}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "–"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def render_markdown(result: dict[str, Any]) -> str:
    """The report: runs, NLL, sampling time and quality, pictures, notes."""
    runs, settings = result["runs"], result["settings"]
    listed = ", ".join(f"`{r['name']}` ({r['type']})" for r in runs)
    lines = ["# Runs side by side", "",
             f"Runs: {listed}. Sampling steps count network evaluations; ± is one standard error over test examples.",
             ""]
    lines += ["## Runs", ""]
    rows = []
    for r in runs:
        t = r["train"]
        rows.append([r["name"], r["type"], r["data"], f"{r['parameters']:,}", str(t.get("steps", "–")),
                     _duration(t.get("wall_seconds")), _num(t.get("images_per_s"), 0), r["sampler"],
                     f"{_num(t.get('final_loss_per_dim'), 4)} {t.get('objective', '')}".strip()])
    lines += _table(["run", "model", "data", "parameters", "train steps", "train wall time", "images/s", "sampler",
                     "last train loss/dim"], rows)
    lines += ["", "## Test-set likelihood", ""]
    if not settings["nll"]:
        lines.append("Not evaluated (switched off).")
    else:
        rows = []
        for r in runs:
            nll = r.get("nll")
            if not nll:
                why = "none: the model has no likelihood" if r.get("likelihood") == "none" else "skipped (see notes)"
                rows.append([r["name"], "–", why, "–", "–", "–"])
                continue
            for res in nll["results"].values():  # kind: a bound on -ln p(x), or a stochastic estimate
                name = f"{res['bound']} ({res.get('kind', 'bound')})"
                rows.append([r["name"], name, _pm(res["nats"], res["nats_se"], 2),
                             _pm(res["bits_per_dim"], res["bits_per_dim_se"], 4), str(nll["n_examples"]),
                             str(nll["repeats"])])
        lines += _table(["run", "bound", "nats/image", "bits/dim", "test examples", "repeats"], rows)
        if any(r["type"] == "ddpm" for r in runs):
            lines += ["", "A DDPM's bound is estimated with one diffusion step per example and repeat (uniform t, "
                          "times T, Ho et al. 2020, eq. 5); the terms of small t dominate, so the estimate is "
                          "heavy-tailed: raise --nll-repeats for a tighter error bar."]
        uniform = next((r["nll"]["uniform"] for r in runs if r.get("nll") and r["nll"].get("uniform")), None)
        if uniform:
            lines += ["", f"For scale: a uniform distribution over the {uniform['values']} values costs "
                          f"{uniform['nats']:.1f} nats/image ({uniform['bits_per_dim']:.3f} bits/dim)."]
    lines += ["", "## Sampling: time and quality", "",
              f"{settings['n']} samples per run and step count; quality in the features of bfn's MNIST classifier "
              "against the test split (FID and KID lower is better; precision and recall higher).", ""]
    rows = []
    for s in settings["steps"]:
        for r in runs:
            e = r["sampling"].get(str(s))
            if e is None:
                rows.append([str(s), r["name"], "skipped (see notes)", "", "", "", "", ""])
                continue
            if "note" in e:
                rows.append([str(s), r["name"], e["note"], "", "", "", "", ""])
                continue
            q = e.get("quality")
            ms = f"{1000 * e['seconds_per_image']:.1f}"
            s_label = str(e.get("steps") or "one shot") if s == "usual" else str(s)
            if q is None:
                rows.append([s_label, r["name"], ms, e.get("quality_note", "–"), "", "", "", ""])
                continue
            rows.append([s_label, r["name"], ms, _num(q["fid"], 2), _pm(q["kid"], q.get("kid_std"), 4),
                         _num(q["precision"], 3), _num(q["recall"], 3), _num(q.get("confidence"), 3)])
    lines += _table(["steps", "run", "ms/image", "FID", "KID", "precision", "recall", "confidence"], rows)
    figures = result["figures"]
    captions = {"samples": "Samples: a row per step count, a column per run.",
                "evolution": f"Evolution over {EVOLUTION_K} of {settings['evolution_steps']} steps: per sample, the "
                             "input (BFN: input-distribution mean; DDPM: x_t) and the output prediction (BFN: output "
                             "mean; DDPM: predicted x_0), then the sample.",
                "curves": "Training loss per dim against step and wall time. BFN logs L^inf in nats, DDPM L_simple "
                          "(a squared error): compare shapes and speed, not values."}
    for key, title in (("samples", "Samples"), ("evolution", "Evolution"), ("curves", "Training curves")):
        if key in figures:
            lines += ["", f"## {title}", "", captions[key], "", f"![{title}]({figures[key]})"]
    if result["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result["notes"]]
    lines += ["", f"Settings: {json.dumps(settings)}. Wall time of this report: {_duration(result['wall_seconds'])}.",
              ""]
    return "\n".join(lines)
