"""The official BFN networks and checkpoints, checked against numbers the official code itself produced.

tests/fixtures/official/ is written by scripts/make_official_fixtures.py, which imports the classes of
nnaisense/bayesian-flow-networks, builds each network at reduced size with the shipped configs' options, gives it
seeded random weights and records its state dict, outputs, losses and one run of its sampler, plus the key names,
shapes and parameter counts of the full-size modules.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bfn.cli import main
from bfn.errors import CheckpointError, ConfigError
from bfn.flows.continuous import GaussianParams
from bfn.models import from_pretrained
from bfn.models.official import convert
from bfn.networks import build_network

FIXTURES = Path(__file__).parent / "fixtures" / "official"
INFO = json.loads((FIXTURES / "fixtures.json").read_text())
CKPT = FIXTURES / "mnist_tiny_ema.pt"
FULL = {"mnist": ("official-mnist-unet", {}, 24_808_961), "cifar10_1": ("official-cifar-unet", {}, 30_722_188),
        "cifar10_2": ("official-cifar-unet", {"out_channels": 6}, 30_722_584),
        "text8": ("official-text8-gpt", {}, 170_175_003)}
#: tiny fixture -> the paper preset it imports into
PRESET = {"mnist": "mnist-discrete-paper", "cifar_cont": "cifar10-continuous-256",
          "cifar_disc": "cifar10-discretized-16", "text8": "text8-discrete"}


def official_state(tag: str) -> dict[str, torch.Tensor]:
    if tag == "mnist":
        return torch.load(CKPT, map_location="cpu", weights_only=True)
    return {k[len("state."):]: v.float() for k, v in load_file(FIXTURES / f"{tag}.safetensors").items()
            if k.startswith("state.")}


@pytest.fixture(scope="module")
def models() -> dict:
    return {tag: convert(official_state(tag), preset=PRESET[tag]).model for tag in PRESET}


def to_ours(tag: str, theta: torch.Tensor | None, t: torch.Tensor):
    """Official input parameters (channel-last images / [B, L, K] probabilities) -> bfn's theta, and t -> [B]."""
    tb = t.reshape(t.shape[0], -1)[:, 0]
    if theta is None:
        return None, tb
    if tag == "mnist":  # the official flow keeps p(class 0) only
        p0 = theta.permute(0, 3, 1, 2)
        return torch.stack([p0.log(), (1 - p0).log()], dim=-1), tb
    if tag == "text8":
        return theta.log(), tb
    # continuous: (mean, precision); the precision does not reach the network
    return GaussianParams(theta.permute(0, 3, 1, 2), torch.ones(theta.shape[0])), tb


def to_ours_data(tag: str, x: torch.Tensor) -> torch.Tensor:
    if tag == "mnist":
        return x.permute(0, 3, 1, 2).long()
    if tag == "text8":
        return x.long()
    return x.permute(0, 3, 1, 2).float()


def output_as_ours(tag: str, out: torch.Tensor) -> torch.Tensor:
    """Official output -> bfn's [B, *S, G]."""
    if tag == "text8":
        return out
    b, hw, c, g = out.shape
    side = math.isqrt(hw)
    return out.reshape(b, side, side, c, g).permute(0, 3, 1, 2, 4)


# --------------------------------------------------------------------------- full size: counts, names, shapes
@pytest.mark.parametrize("tag", list(FULL))
def test_full_size_networks_have_the_official_parameters_and_names(tag: str) -> None:
    recorded = json.loads((FIXTURES / "full_size.json").read_text())[tag]
    name, kwargs, count = FULL[tag]
    with torch.device("meta"):
        net = build_network(name, **kwargs)
    assert recorded["params"] == count  # the number the official code printed when the fixtures were made
    assert sum(p.numel() for p in net.parameters()) == count
    official = {k: v for k, v in recorded["keys"]}
    ours = {f"net.{k}": list(v.shape) for k, v in net.state_dict().items()}
    assert set(official) - set(ours) <= {"net.input_adapter.pos_feats"}  # the unused table, see models.official
    assert set(ours) <= set(official)
    assert all(ours[k] == official[k] for k in ours)


# --------------------------------------------------------------------------- outputs on fixed (theta, t)
@pytest.mark.parametrize("tag", list(PRESET))
def test_outputs_equal_the_official_network(models: dict, tag: str) -> None:
    model = models[tag]
    data = load_file(FIXTURES / f"{tag}.safetensors")
    theta, tb = to_ours(tag, data["out.theta"], torch.tensor(INFO[tag]["times"]))
    with torch.no_grad():
        ours = model.net_output(theta, tb)
    want = output_as_ours(tag, data["out.output"])
    diff = (ours - want).abs().max().item()
    assert diff < 1e-5, f"{tag}: max |difference| {diff:.2e}"
    assert want.abs().max() > 0.5  # the check compares real signals, not zeros


# --------------------------------------------------------------------------- losses on fixed (x, t, theta)
def _p_out(model, tag: str, theta: torch.Tensor, t: torch.Tensor):
    th, tb = to_ours(tag, theta, t)
    return model.flow.output_distribution(model.net_output(th, tb), th, tb), tb


@pytest.mark.parametrize("tag", list(PRESET))
def test_continuous_time_and_reconstruction_losses_equal_the_official(models: dict, tag: str) -> None:
    model, data = models[tag], load_file(FIXTURES / f"{tag}.safetensors")
    x = to_ours_data(tag, data["loss.x"])
    with torch.no_grad():
        p_out, tb = _p_out(model, tag, data["loss.theta"], data["loss.t"])
        cts = model.flow.continuous_time_loss(x, p_out, tb)
        p_one, _ = _p_out(model, tag, data["loss.theta_r"], torch.ones_like(data["loss.t"]))
        recon = model.flow.reconstruction_loss(x, p_one)
    want_cts = torch.tensor(INFO[tag]["cts_loss_per_dim"], dtype=torch.float64).sum(1)
    want_recon = torch.tensor(INFO[tag]["recon_loss_per_dim"], dtype=torch.float64).sum(1)
    torch.testing.assert_close(cts.double(), want_cts, rtol=2e-5, atol=1e-4)
    torch.testing.assert_close(recon.double(), want_recon, rtol=2e-5, atol=1e-4)


def test_continuous_n_step_loss_equals_the_official(models: dict) -> None:
    """CIFAR-10 continuous (point-mass output): L^n has a closed form, so the numbers agree exactly."""
    tag = "cifar_cont"
    model, data = models[tag], load_file(FIXTURES / f"{tag}.safetensors")
    x = to_ours_data(tag, data["loss.x"])
    with torch.no_grad():
        p_out, tb = _p_out(model, tag, data["nstep.theta"], data["nstep.t"])
        ours = model.flow.discrete_time_loss(x, p_out, tb, INFO[tag]["nstep_n"])
    want = torch.tensor(INFO[tag]["nstep_loss"], dtype=torch.float64).reshape(3, -1).sum(1)
    torch.testing.assert_close(ours.double(), want, rtol=1e-4, atol=1e-4)


def receiver_kls(x: torch.Tensor, probs: torch.Tensor, alpha: torch.Tensor, draws: int,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo draws [draws, B] of ln p_S(y | x) - ln p_R(y), mean over variables, for two receivers on the
    same y ~ p_S: the paper's mixture of K-dim Gaussians, sum_k p_k N(y | alpha (K e_k - 1), alpha K I), and the
    coordinate-wise product prod_j sum_k p_k N(y_j | alpha (K d_kj - 1), alpha K) (reference §5.1). Written out
    here by hand, independently of bfn.flows."""
    k = probs.shape[-1]
    a = alpha.reshape(-1, *[1] * (probs.ndim - 1))
    e = torch.nn.functional.one_hot(x, k).double()
    std = (a * k).sqrt()
    normal = torch.distributions.Normal
    means = a[..., None] * (k * torch.eye(k, dtype=torch.float64) - 1)  # [.., K classes, K coords]
    paper, factorised = [], []
    for _ in range(draws):
        y = a * (k * e - 1) + std * torch.randn(e.shape, generator=gen, dtype=torch.float64)
        log_s = normal(a * (k * e - 1), std).log_prob(y).sum(-1)
        log_comp = normal(means, std[..., None]).log_prob(y[..., None, :]).sum(-1)  # [.., K]
        log_paper = torch.logsumexp(probs.log() + log_comp, -1)
        mix = probs * normal(a * (k - 1), std).log_prob(y).exp() + (1 - probs) * normal(-a, std).log_prob(y).exp()
        paper.append((log_s - log_paper).reshape(x.shape[0], -1).mean(1))
        factorised.append((log_s - mix.log().sum(-1)).reshape(x.shape[0], -1).mean(1))
    return torch.stack(paper), torch.stack(factorised)


@pytest.mark.slow
@pytest.mark.parametrize("tag", ["mnist", "text8"])
def test_discrete_n_step_loss_is_the_papers_not_the_official_factorised_one(models: dict, tag: str) -> None:
    """Reference §5.1: the official n-step loss for discrete data uses a receiver that is a product over the K
    coordinates of 1-D mixtures; bfn's is the paper's mixture of K-dimensional Gaussians. Same network outputs,
    same x and theta: the official value matches the hand-written factorised receiver, bfn's flow matches the
    hand-written paper receiver, and on common draws of y the two receivers differ significantly."""
    model, data, info = models[tag], load_file(FIXTURES / f"{tag}.safetensors"), INFO[tag]
    n, x = info["nstep_n"], to_ours_data(tag, data["loss.x"])
    gen = torch.Generator().manual_seed(7)
    draws = 2000
    with torch.no_grad():
        p_out, tb = _p_out(model, tag, data["nstep.theta"], data["nstep.t"])
        dims = x[0].numel()
        ours = torch.stack([model.flow.discrete_time_loss(x, p_out, tb, n, generator=gen, antithetic=True)
                            for _ in range(draws)]).double() / dims
        alpha = model.flow.accuracy_between(tb, tb + 1.0 / n).double()
        paper, factorised = (n * v for v in receiver_kls(x, p_out.probs.double(), alpha, draws, gen))

    def se(v: torch.Tensor) -> torch.Tensor:
        return v.std(0) / math.sqrt(len(v))

    official = torch.tensor(info["nstep_loss"], dtype=torch.float64)
    official_se = torch.tensor(info["nstep_loss_se"], dtype=torch.float64)
    print(f"{tag} n={n} (nats per variable): official {official.tolist()}, bfn {ours.mean(0).tolist()}, "
          f"paper receiver {paper.mean(0).tolist()}, factorised receiver {factorised.mean(0).tolist()}")
    # the official number is the factorised receiver's, within Monte Carlo error ...
    assert ((factorised.mean(0) - official).abs() < 5 * (official_se**2 + se(factorised) ** 2).sqrt()).all()
    # ... bfn's is the paper's ...
    assert ((ours.mean(0) - paper.mean(0)).abs() < 5 * (se(ours) ** 2 + se(paper) ** 2).sqrt()).all()
    # ... and the two differ: on the same y, by more than 3 standard errors of the paired difference (t > 0)
    diff = paper - factorised
    assert ((diff.mean(0) / se(diff)).abs()[1:] > 3).all()


def test_official_numerical_guards_match_the_official_code() -> None:
    """On extreme outputs (log-stds to +-15, means far from the data) the official code clips and falls back to
    density times bin width; `model.flow.official` reproduces it, and without it the numbers differ."""
    from bfn.flows import ContinuousFlow, DiscretizedFlow

    g = load_file(FIXTURES / "guards.safetensors")
    t = g["t"][:, 0]
    for official in (True, False):
        flow = DiscretizedFlow(num_bins=16, sigma_1=1e-3**0.5, official=official)
        p_out = flow.output_distribution(g["disc_params"], GaussianParams(g["mean"], torch.ones(4)), t)
        same_mean = torch.allclose(p_out.mean, g["disc_mean"], rtol=1e-4, atol=1e-5)
        same_log_prob = torch.allclose(p_out.log_prob(g["x16"]).float(), g["disc_log_prob"], rtol=1e-4, atol=1e-4)
        assert same_mean and same_log_prob if official else not (same_mean and same_log_prob)
    for bins, sigma_sq, std in ((16, 1e-3, 0.7 * 1e-3**0.5), (256, 1e-6, None)):
        for official in (True, False):
            flow = ContinuousFlow(sigma_1=sigma_sq**0.5, recon_bins=bins, recon_std=std, official=official)
            p_out = flow.output_distribution(g["cont_params"], GaussianParams(g["mean"], torch.ones(4)),
                                             torch.ones(4))
            ours = flow.reconstruction_loss(g[f"x{bins}"], p_out)
            want = g[f"cont{bins}_recon"].double().sum(1)
            close = torch.allclose(ours.double(), want, rtol=1e-5, atol=1e-3)
            assert close if official else not close


# --------------------------------------------------------------------------- the sampler's trajectory
def test_sampling_follows_the_official_trajectory(models: dict) -> None:
    """Replay the official `BFN.sample` (6 steps, tiny MNIST): given its draws y, bfn's model computes the same
    accuracies, the same output distributions and the same Bayesian updates (bfn updates in log space), and
    final="mode" returns what the official sampler returns. The one documented difference: by default bfn's last
    step draws from p_O, as the paper's Algorithm 9, where the official code takes the mode."""
    model = models["mnist"]
    rec = load_file(FIXTURES / "mnist_trajectory.safetensors")
    steps = rec["theta"].shape[0]
    for i in range(1, steps + 1):
        theta = rec["theta"][i - 1].permute(0, 3, 1, 2, 4).log()  # official [B, H, W, C, K] -> [B, C, H, W, K]
        y = rec["y"][i - 1].permute(0, 3, 1, 2, 4)
        alpha = model.flow.accuracy(i, steps)
        assert alpha.item() == pytest.approx(rec["alpha"][i - 1].item(), rel=1e-6)
        new = model.flow.update(theta, y, alpha).softmax(-1)
        want = rec["theta_next"][i - 1].permute(0, 3, 1, 2, 4)
        torch.testing.assert_close(new, want, rtol=1e-4, atol=1e-6)
    last = rec["theta_next"][-1].permute(0, 3, 1, 2, 4).log()
    with torch.no_grad():
        p_final = model.output_distribution(last, torch.ones(last.shape[0]))
    assert torch.equal(p_final.mode.float(), rec["final_mode"].permute(0, 3, 1, 2))


# --------------------------------------------------------------------------- bfn import
def test_import_writes_a_run_folder_that_the_other_commands_use(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["import", str(CKPT), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "669,089 parameters" in printed and "mnist-discrete-paper" in printed
    note = json.loads((out / "IMPORTED.json").read_text())
    assert note["dropped"] == ["net.input_adapter.pos_feats"] and len(note["sha256"]) == 64
    model = from_pretrained(out)
    data = load_file(FIXTURES / "mnist.safetensors")
    theta, tb = to_ours("mnist", data["out.theta"], torch.tensor(INFO["mnist"]["times"]))
    with torch.no_grad():
        diff = (model.net_output(theta, tb) - output_as_ours("mnist", data["out.output"])).abs().max()
    assert diff < 1e-5
    assert main(["sample", str(out), "--n", "2", "--steps", "3", "--final", "mode"]) == 0
    assert (out / "samples_paper_3.png").is_file()
    assert main(["import", str(CKPT), "--out", str(out)]) == 2  # refuses to overwrite without --force
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize(("tag", "file", "extra"), [
    ("cifar_cont", "cifar10_256c_ema.pt", []), ("cifar_disc", "ema_model.pt", ["--preset", "cifar10-discretized-16"]),
    ("text8", "text8_ema.pt", [])])
def test_import_cifar_and_text8_checkpoints(tmp_path: Path, tag: str, file: str, extra: list[str]) -> None:
    """The official state dicts of the fixtures, saved as the official code saves them, import with one command
    and reproduce the official outputs."""
    torch.save(official_state(tag), tmp_path / file)
    assert main(["import", str(tmp_path / file), "--out", str(tmp_path / "run"), *extra]) == 0
    model = from_pretrained(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "IMPORTED.json").read_text())["preset"] == PRESET[tag]
    data = load_file(FIXTURES / f"{tag}.safetensors")
    theta, tb = to_ours(tag, data["out.theta"], torch.tensor(INFO[tag]["times"]))
    with torch.no_grad():
        diff = (model.net_output(theta, tb) - output_as_ours(tag, data["out.output"])).abs().max()
    assert diff < 1e-5


def _broken(tmp_path: Path, change) -> Path:
    state = torch.load(CKPT, weights_only=True)
    change(state)
    path = tmp_path / "broken_ema.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s.pop("net.middle_block.1.qkv.weight"),
     r"lacks net\.middle_block\.1\.qkv\.weight \(shape \[192, 64, 1\]\)"),
    (lambda s: s.update({"net.extra.weight": torch.zeros(3)}), r"unknown key net\.extra\.weight \(shape \[3\]\)"),
    (lambda s: s.update({"net.time_embed.0.bias": torch.zeros(7)}),
     r"net\.time_embed\.0\.bias has shape \[7\], expected \[128\]"),
    (lambda s: s.update({"net.out.2.bias": torch.full((32,), float("nan"))}), r"net\.out\.2\.bias holds NaN"),
])
def test_import_names_the_first_bad_key_in_one_line(tmp_path: Path, change, message: str) -> None:
    path = _broken(tmp_path, change)
    with pytest.raises(CheckpointError, match=message) as err:
        convert(torch.load(path, weights_only=True))
    assert "\n" not in str(err.value)


def test_import_errors_for_other_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "nested.pt")
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for name, text in [("nested.pt", "does not hold a state dict"), ("plain.pt", "no key starts with 'net.'"),
                       ("junk.pt", "cannot be read as a weights-only"), ("missing.pt", "not found")]:
        assert main(["import", str(tmp_path / name), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["import", "hf://rupspace/pretrained-BFNs/mnist_ema.pt"]) == 2
    err = capsys.readouterr().err
    assert "https://huggingface.co/rupspace/pretrained-BFNs/resolve/main/mnist_ema.pt" in err
    assert "bfn import mnist_ema.pt" in err and err.count("\n") == 1


def test_cifar_presets_come_from_the_file_name_or_preset(tmp_path: Path) -> None:
    state = official_state("cifar_disc")
    with pytest.raises(ConfigError, match="--preset cifar10-discretized-256 or --preset cifar10-discretized-16"):
        convert(state)
    assert convert(state, filename="cifar10_16d_ema.pt").preset == "cifar10-discretized-16"
    with pytest.raises(CheckpointError, match="emits 2 number"):
        convert(state, preset="cifar10-continuous-16")
    with pytest.raises(ConfigError, match="does not fit"):
        convert(state, preset="text8-discrete")


@pytest.mark.slow
def test_eval_paper_protocol_on_an_imported_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """An official-format checkpoint of a small 28x28 MNIST network (written here in the official key layout)
    imports, and `bfn eval --protocol paper` reports L^784 + L^r in nats/image on (tiny, written) MNIST files."""
    import struct

    import numpy as np

    net = build_network("official-mnist-unet", model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                        unet_out_channels=32)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state["net.input_adapter.pos_feats"] = torch.zeros(28 * 28, 258)
    torch.save(state, tmp_path / "ema_model.pt")
    rng = np.random.default_rng(0)
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    for name, array in (("t10k-images-idx3-ubyte", rng.integers(0, 256, (6, 28, 28))),
                        ("t10k-labels-idx1-ubyte", rng.integers(0, 10, 6))):
        header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
        (tmp_path / "data" / "mnist" / name).write_bytes(header + array.astype(np.uint8).tobytes())
    monkeypatch.setenv("BFN_DATA_DIR", str(tmp_path / "data"))
    run = tmp_path / "run"
    assert main(["import", str(tmp_path / "ema_model.pt"), "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--protocol", "paper", "--repeats", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "paper protocol (binarized MNIST): L^784 + L^r = " in out and "nats/image over 6 test examples" in out
    result = json.loads((run / "eval.json").read_text())["nll"]
    assert result["protocol"]["unit"] == "nats/image" and set(result["results"]) == {"784"}
    assert result["n_examples"] == 6 and result["repeats"] == 2
