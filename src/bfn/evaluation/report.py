"""What `bfn train` writes after training: samples from the EMA weights and, for toy data, how close they are
to the data distribution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bfn.config import load_config
from bfn.models.hub import from_pretrained
from bfn.utils.io import atomic_write_text

MIXTURE_1D_MEANS = (-0.75, -0.25, 0.25, 0.75)


def post_train_report(run_dir: str | Path, *, device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Sample `sample.n` examples with `sample.steps` steps and write a picture (and toy metrics) into run_dir."""
    from bfn.data.text import data_is_text
    from bfn.viz.grid import save_sample_grid
    from bfn.viz.plots import save_sample_plot

    run_dir = Path(run_dir)
    cfg = load_config(str(run_dir / "config.yaml"))
    model = from_pretrained(run_dir, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    x = model.sample(cfg.sample.n, cfg.sample.steps, sampler=cfg.sample.sampler, generator=gen).cpu()
    out: dict[str, Any] = {}
    if cfg.data.name == "mixture-1d":
        from bfn.data.toy import mixture_1d_sample
        from bfn.evaluation.toy import mode_fractions, wasserstein_1d

        fresh = mixture_1d_sample(x.shape[0], generator=torch.Generator().manual_seed(seed + 1))
        metrics = {"wasserstein_1": wasserstein_1d(x, fresh), "mode_fractions": mode_fractions(x, MIXTURE_1D_MEANS),
                   "n_samples": x.shape[0], "sampling_steps": cfg.sample.steps, "sampler": cfg.sample.sampler}
        atomic_write_text(run_dir / "eval_toy.json", json.dumps(metrics, indent=2))
        plot = save_sample_plot(x, run_dir / "samples.png", data=fresh,
                                title=f"{x.shape[0]} samples ({cfg.sample.steps} steps) over fresh data")
        out.update({"W1 to fresh data": f"{metrics['wasserstein_1']:.4f}",
                    "mode fractions": ", ".join(f"{f:.3f}" for f in metrics["mode_fractions"]),  # type: ignore[attr-defined]
                    "histogram": str(plot), "metrics": str(run_dir / "eval_toy.json")})
    elif cfg.data.name == "array":  # before text: the user's own integer sequences go back to their values
        out.update(own_data_report(run_dir, cfg, model, x, device=device, seed=seed))
    elif data_is_text(model.data):
        from bfn.viz.text import write_text_samples

        path = write_text_samples(x, run_dir / "samples.txt")
        out["samples"] = f"{path}\n" + path.read_text().rstrip("\n")
    else:
        data = model.config["data"]
        path = save_sample_grid(x, run_dir / "samples.png", kind=data["kind"], num_classes=data["num_classes"] or 2)
        out["samples"] = str(path)
    return out


def own_data_format(cfg: Any) -> Any:
    """The `UserFormat` of a run on the user's own data (`data.name=array`): how its model-format values map back
    to the user's layout, value range and dtype (reads the user's file once)."""
    from bfn.data.arrays import user_format

    options = dict(cfg.data.options)
    return user_format(options.pop("path", None), options)


def user_units_shift(fmt: Any, kind: str, dims: int) -> float | None:
    """What turns an NLL of scaled continuous own data (format `fmt`) into the user's units: x = m + s x' with
    s = (high - low) / 2 per value, so -ln p(x) = -ln p(x') + sum ln s (change of variables); None where nothing
    was scaled."""
    import numpy as np

    if kind != "continuous" or fmt.low is None:
        return None
    return float(np.log(fmt.scales(dims)).sum())


def save_own_data_picture(cfg: Any, fmt: Any, data: Any, x: torch.Tensor, user: Any, path: Path, *, seed: int = 0,
                          test: Any = None) -> Path:
    """The picture of samples `x` (model format; `user`: the same in the user's format `fmt`) of a run on the
    user's own data: vectors as a scatter plot (histogram for one column) in the user's units over up to 2,000
    examples of the test split (`test`, loaded when not given), everything else as `save_sample_grid` draws it."""
    import numpy as np

    from bfn.data import load_dataset
    from bfn.evaluation.nll import materialize
    from bfn.viz.grid import save_sample_grid

    if x.ndim != 2 or data.kind == "discrete":
        return save_sample_grid(x, path, kind=data.kind, num_bins=data.num_bins, num_classes=data.classes)
    if test is None:
        test, _ = load_dataset(cfg.data.name, "test", root=cfg.data.root, **cfg.data.options)
    shown = torch.as_tensor(np.asarray(user, dtype=np.float64).reshape(len(user), -1))
    reference = fmt.to_user(materialize(test, limit=2000, seed=seed))
    reference_t = torch.as_tensor(np.asarray(reference, dtype=np.float64).reshape(len(reference), -1))
    return save_sample_grid(shown, path, kind=data.kind, data=reference_t,
                            title=f"{len(shown)} samples, {len(reference_t)} test examples")


def own_data_report(run_dir: Path, cfg: Any, model: Any, x: torch.Tensor, *, device: str, seed: int,
                    limit: int = 500) -> dict[str, Any]:
    """Samples in the user's format (samples.npy + a picture) and the NLL bound L^inf + L^r on (at most `limit`)
    test examples, one repeat: a first look; `bfn eval RUN --nll` gives the full numbers."""
    import numpy as np

    from bfn.data import load_dataset
    from bfn.data.arrays import TABLE_SUFFIXES, save_table
    from bfn.evaluation.nll import evaluate_nll
    from bfn.utils.io import atomic_write

    data = model.data
    fmt = own_data_format(cfg)
    user = fmt.to_user(x)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, user)

    atomic_write(run_dir / "samples.npy", write)
    written = f"{run_dir / 'samples.npy'}"
    source = Path(str(cfg.data.options.get("path", "")))
    if source.suffix.lower() in TABLE_SUFFIXES and user.ndim == 2:
        written += f" and {save_table(run_dir / 'samples.csv', user, source)}"
    test, _ = load_dataset(cfg.data.name, "test", root=cfg.data.root, **cfg.data.options)
    picture = save_own_data_picture(cfg, fmt, data, x, user, run_dir / "samples.png", seed=seed, test=test)
    lo, hi = (user.min(), user.max()) if user.size else (0, 0)
    out: dict[str, Any] = {"samples": f"{written} {tuple(user.shape)} {user.dtype}, values "
                                      f"{lo:.4g}..{hi:.4g} (your layout and range); picture {picture}"}
    if model.capabilities.likelihood != "none":
        result = evaluate_nll(model, test, steps=["inf"], repeats=1, seed=seed, device=device, limit=limit)
        res = result["results"]["inf"]
        out["test NLL"] = (f"{res['nats']:.3f} ± {res['nats_se']:.3f} nats/example, {res['bits_per_dim']:.4f} bits/dim "
                           f"({res['bound']}, {result['n_examples']} test examples, 1 repeat; more: bfn eval "
                           f"{run_dir} --nll)")
        shift = user_units_shift(fmt, data.kind, int(result["dims"]))
        if shift is not None:
            out["test NLL"] += (f"; in your units (before the scaling to [-1, 1]): {res['nats'] + shift:.3f} "
                                "nats/example")
        atomic_write_text(run_dir / "eval_quick.json", json.dumps(result, indent=2, default=str))
    return out
