"""Write the test fixtures that tie bfn's official-compatible networks to the official BFN code itself.

    python scripts/make_official_fixtures.py /path/to/nnaisense/bayesian-flow-networks [--out tests/fixtures/official]

The official repository (https://github.com/nnaisense/bayesian-flow-networks, Apache-2.0) is copied to a temporary
folder and imported from there; nothing of it is written into bfn. Its imports of torchvision, requests and rich
(used only for data download and progress bars) are replaced by empty stand-ins when those packages are missing.

For each of the three networks (MNIST U-Net, CIFAR-10 VDM U-Net with 1 and 2 outputs per channel, text8 GPT) the
script builds the official BFN module with `make_bfn` from the shipped config with only its sizes reduced (same
classes and options, so every layer kind and key pattern is present), gives every parameter a seeded random value
(so no zero-initialised layer hides a difference), and stores:
  <name>.safetensors: the state dict (`state.<official key>`), fixed inputs (theta, t) and the official outputs,
                      the (x, t, theta) of the loss checks;
  fixtures.json:      the reduced configs and the official loss values;
  full_size.json:     key names, shapes and parameter counts of the full-size official modules;
  mnist_tiny_ema.pt:  an official-format checkpoint (`torch.save(bfn.state_dict())`) for the import test;
  mnist_trajectory.safetensors: every step of the official sampler (`BFN.sample`) on the tiny MNIST model;
  guards.safetensors: the official output distributions on extreme outputs, where its numerical guards act.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

SEED = 1234


def stub_missing_modules() -> None:
    """Empty stand-ins for packages the official code imports at module level but the networks never use."""
    def stub(name: str, **attrs: object) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or the index wheel that fails against a CPU torch build
        for key in [k for k in sys.modules if k.startswith("torchvision")]:
            del sys.modules[key]
        transforms = stub("torchvision.transforms", Lambda=object, Compose=object, ToTensor=object,
                          RandomHorizontalFlip=object)
        datasets = stub("torchvision.datasets", CIFAR10=object, MNIST=object)
        utils = stub("torchvision.utils", make_grid=None)
        stub("torchvision", transforms=transforms, datasets=datasets, utils=utils)
    try:
        import requests  # noqa: F401
    except ImportError:
        stub("requests")
    try:
        import rich.progress  # noqa: F401
    except ImportError:
        progress = stub("rich.progress", Progress=object, SpinnerColumn=object, MofNCompleteColumn=object,
                        TimeElapsedColumn=object, TextColumn=object)
        stub("rich", progress=progress, print=print)


def import_official(src: Path) -> types.SimpleNamespace:
    tmp = Path(tempfile.mkdtemp(prefix="official-bfn-"))
    for path in list(src.glob("*.py")) + [src / "networks", src / "configs"]:
        dest = tmp / path.name
        (shutil.copytree if path.is_dir() else shutil.copy)(path, dest)
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(tmp))
    import accelerate  # noqa: F401  (before any stand-in: accelerate probes for rich by its module spec)

    stub_missing_modules()
    import model  # type: ignore[import-not-found]
    import utils_train  # type: ignore[import-not-found]
    from omegaconf import OmegaConf

    return types.SimpleNamespace(model=model, utils_train=utils_train, OmegaConf=OmegaConf, dir=tmp)


def model_config(off: types.SimpleNamespace, name: str, **changes: dict) -> object:
    cfg = off.OmegaConf.load(off.dir / "configs" / f"{name}.yaml").model
    for section, params in changes.items():
        for key, value in params.items():
            cfg[section].parameters[key] = value
    return cfg


def randomise(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Seeded random values for every parameter: N(0, 1/fan_in) for matrices and kernels, 1 + N(0, 0.1^2) for
    norm scales, N(0, 0.1^2) for biases; rounded to float16 values, so that they are stored in half the space
    and both sides compute in float32 from exactly the same numbers."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim >= 2:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
            p.copy_(p.half().float())


def key_list(module: torch.nn.Module) -> dict:
    state = module.state_dict()
    params = sum(p.numel() for p in module.parameters())
    return {"params": params, "keys": [[k, list(v.shape)] for k, v in state.items()]}


def full_size(off: types.SimpleNamespace) -> dict:
    out = {}
    for tag, cfg_name in [("mnist", "mnist_discrete"), ("cifar10_1", "cifar10_continuous_256bins"),
                          ("cifar10_2", "cifar10_discretized_256bins"), ("text8", "text8_discrete")]:
        with torch.device("meta"):
            bfn = off.utils_train.make_bfn(model_config(off, cfg_name))
        out[tag] = {"config": cfg_name, **key_list(bfn)}
        print(f"full size {cfg_name}: {out[tag]['params']:,} parameters, {len(out[tag]['keys'])} tensors")
    return out


# reduced sizes: the same options as the shipped configs, smaller widths, depths and images
TINY = {
    "mnist": ("mnist_discrete", {
        "net": {"image_size": 8, "model_channels": 32, "out_channels": 32, "num_res_blocks": 1,
                "channel_mult": [1, 2]},
        "input_adapter": {"input_shape": [8, 8]},
        "output_adapter": {"input_height": 64}}),
    "cifar_cont": ("cifar10_continuous_256bins", {
        "net": {"embedding_dim": 32, "n_blocks": 2, "image_size": 8},
        "input_adapter": {"input_shape": [8, 8]},
        "output_adapter": {"input_height": 35}}),
    "cifar_disc": ("cifar10_discretized_16bins", {
        "net": {"embedding_dim": 32, "n_blocks": 2, "image_size": 8},
        "input_adapter": {"input_shape": [8, 8]},
        "output_adapter": {"input_height": 35}}),
    "text8": ("text8_discrete", {
        "net": {"n_layer": 2, "n_head": 12, "n_embd": 48},
        "input_adapter": {"seq_len": 16, "output_size": 48}}),
}
BATCH = 3
TIMES = [0.0, 0.37, 1.0]


def data_shape(tag: str) -> tuple[int, ...]:
    return {"mnist": (BATCH, 8, 8, 1), "text8": (BATCH, 16)}.get(tag, (BATCH, 8, 8, 3))


def make_data(tag: str, gen: torch.Generator) -> torch.Tensor:
    shape = data_shape(tag)
    if tag == "mnist":
        return torch.randint(0, 2, shape, generator=gen)
    if tag == "text8":
        return torch.randint(0, 27, shape, generator=gen)
    bins = 256 if tag == "cifar_cont" else 16
    idx = torch.randint(0, bins, shape, generator=gen)
    return (2 * idx + 1) / bins - 1


def fixed_theta(tag: str, gen: torch.Generator) -> tuple:
    """Input parameters for the output check, in the official format."""
    shape = data_shape(tag)
    if tag == "mnist":
        return (torch.rand(shape, generator=gen),)  # probability of class 0
    if tag == "text8":
        return (torch.softmax(2 * torch.randn(*shape, 27, generator=gen), -1),)
    return (0.6 * torch.randn(shape, generator=gen), None)


def times(tag: str, values: list[float]) -> torch.Tensor:
    shape = data_shape(tag)
    t = torch.tensor(values).reshape(-1, *([1] * (len(shape) - 1)))
    return t.expand(shape).contiguous().float()


def one_network(off: types.SimpleNamespace, tag: str) -> tuple[dict, dict, torch.nn.Module]:
    cfg_name, changes = TINY[tag]
    cfg = model_config(off, cfg_name, **changes)
    torch.manual_seed(SEED)
    bfn = off.utils_train.make_bfn(cfg)
    gen = torch.Generator().manual_seed(SEED)
    randomise(bfn, gen)
    bfn.eval()
    params = dict(bfn.named_parameters())
    tensors: dict[str, torch.Tensor] = {} if tag == "mnist" else {  # MNIST: mnist_tiny_ema.pt holds its state
        f"state.{k}": (v.half() if k in params else v).detach().clone() for k, v in bfn.state_dict().items()}
    info: dict = {"config": cfg_name, "changes": changes, "params": sum(p.numel() for p in bfn.parameters()),
                  "times": TIMES}
    flow, loss = bfn.bayesian_flow, bfn.loss
    with torch.no_grad():
        # 1. outputs on fixed (theta, t)
        theta = fixed_theta(tag, gen)
        t = times(tag, TIMES)
        out = bfn.net(flow.params_to_net_inputs(theta), t)
        tensors["out.theta"] = theta[0].contiguous()
        tensors["out.output"] = out.contiguous()
        # 2. losses on fixed (x, t, noise); theta ~ p_F drawn by the official flow and stored with its noise'
        #    result, so that our side sees the same theta
        x = make_data(tag, gen)
        t_loss = times(tag, [0.2, 0.55, 0.9])
        torch.manual_seed(SEED + 1)
        theta_l = flow(x, t_loss)
        out_l = bfn.net(flow.params_to_net_inputs(theta_l), t_loss)
        cts = loss.cts_time_loss(x, out_l.float(), theta_l, t_loss)
        t_one = torch.ones_like(t_loss)
        theta_r = flow(x, t_one)
        out_r = bfn.net(flow.params_to_net_inputs(theta_r), t_one)
        recon = loss.reconstruction_loss(x, out_r, theta_r)
        tensors.update({"loss.x": x.contiguous(), "loss.t": t_loss.contiguous(), "loss.theta": theta_l[0],
                        "loss.theta_r": theta_r[0]})
        info["cts_loss_per_dim"] = cts.flatten(1).tolist()
        info["recon_loss_per_dim"] = recon.flatten(1).tolist()
        # 3. n-step loss at t = (i-1)/n, with many Monte Carlo samples of y for a precise official value
        n = 10
        t_n = times(tag, [0.0, 0.3, 0.9])
        torch.manual_seed(SEED + 2)
        theta_n = flow(x, t_n)
        out_n = bfn.net(flow.params_to_net_inputs(theta_n), t_n)
        torch.manual_seed(SEED + 3)
        if tag in ("mnist", "text8"):  # Monte Carlo over y: 20 batches of 200 draws, for a mean and its error
            batches = torch.stack([loss.discrete_time_loss(x, out_n.float(), theta_n, t_n, n, n_samples=200)
                                   for _ in range(20)])  # [20, B, 1]: mean over variables of the K-sum, times n
            info["nstep_loss"] = batches.mean(0).flatten().tolist()
            info["nstep_loss_se"] = (batches.std(0) / 20**0.5).flatten().tolist()
            info["nstep_samples"] = 4000
        else:
            info["nstep_loss"] = loss.discrete_time_loss(x, out_n.float(), theta_n, t_n, n).flatten().tolist()
            info["nstep_samples"] = 10
        info["nstep_n"] = n
        tensors.update({"nstep.t": t_n.contiguous(), "nstep.theta": theta_n[0]})
    return tensors, info, bfn


def mnist_trajectory(bfn: torch.nn.Module, steps: int = 6) -> dict[str, torch.Tensor]:
    """Run the official `BFN.sample` on the tiny MNIST model, recording every Bayesian update (theta before,
    y, alpha, theta after) by wrapping the official flow's `update_input_params`."""
    flow = bfn.bayesian_flow
    record: dict[str, list] = {"theta": [], "y": [], "alpha": [], "theta_next": []}
    original = flow.update_input_params

    def recording_update(params: tuple, y: torch.Tensor, alpha: float) -> tuple:
        new = original(params, y, alpha)
        record["theta"].append(params[0].clone())
        record["y"].append(y.clone())
        record["alpha"].append(torch.tensor(float(alpha)))
        record["theta_next"].append(new[0].clone())
        return new

    flow.update_input_params = recording_update
    torch.manual_seed(SEED + 4)
    final = bfn.sample((2, 8, 8, 1), steps)
    del flow.update_input_params
    out = {k: torch.stack(v).contiguous() for k, v in record.items()}
    out["final_mode"] = final.contiguous()
    return out


def guards(off: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    """The official output distributions on extreme network outputs, where its numerical guards act: log-stds
    beyond +-10, stds outside [1e-3, 10], bins of probability below 1e-5 (density-times-width fallback), for the
    discretised 16-bin recipe and the continuous recipes' binned reconstruction (16 and 256 bins)."""
    gen = torch.Generator().manual_seed(SEED + 5)
    b, d = 4, 12
    t = torch.tensor([0.3, 0.6, 0.95, 1.0])[:, None].expand(b, d).contiguous()
    mean = 0.8 * torch.randn(b, d, generator=gen)
    out: dict[str, torch.Tensor] = {"t": t, "mean": mean}
    bins16 = (2 * torch.randint(0, 16, (b, d), generator=gen) + 1) / 16 - 1
    bins256 = (2 * torch.randint(0, 256, (b, d), generator=gen) + 1) / 256 - 1
    params = torch.stack([3 * torch.randn(b, d, generator=gen), 30 * torch.rand(b, d, generator=gen) - 15], -1)
    out.update({"x16": bins16, "x256": bins256, "disc_params": params})
    cfg = model_config(off, "cifar10_discretized_16bins", **TINY["cifar_disc"][1])
    loss = off.utils_train.make_bfn(cfg).loss
    dist = loss.distribution_factory.get_dist(params, (mean, None), t)
    out["disc_mean"], out["disc_log_prob"] = dist.mean, dist.log_prob(bins16)
    eps = 2 * torch.randn(b, d, 1, generator=gen)
    out["cont_params"] = eps
    for name, bins in (("cifar10_continuous_16bins", 16), ("cifar10_continuous_256bins", 256)):
        cfg = model_config(off, name, **TINY["cifar_cont"][1])
        loss = off.utils_train.make_bfn(cfg).loss
        x = out[f"x{bins}"]
        out[f"cont{bins}_recon"] = loss.reconstruction_loss(x, eps, (mean, None))
    return {k: v.contiguous() for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("official", type=Path, help="checkout of nnaisense/bayesian-flow-networks")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/official"))
    args = parser.parse_args()
    off = import_official(args.official)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "full_size.json").write_text(json.dumps(full_size(off), separators=(",", ":")) + "\n")
    infos = {}
    for tag in TINY:
        tensors, info, bfn = one_network(off, tag)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(args.out / f"{tag}.safetensors"))
        infos[tag] = info
        print(f"tiny {tag}: {info['params']:,} parameters")
        if tag == "mnist":
            torch.save(bfn.state_dict(), args.out / "mnist_tiny_ema.pt")
            save_file(mnist_trajectory(bfn), str(args.out / "mnist_trajectory.safetensors"))
    save_file(guards(off), str(args.out / "guards.safetensors"))
    (args.out / "fixtures.json").write_text(json.dumps(infos, indent=1) + "\n")
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
