"""The networks' contract: forward(x, t [B], cond=None) shapes, zero-init output, live time/label inputs, errors."""

import io

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from bfn.errors import ConfigError
from bfn.networks import MLP, NETWORKS, Siren, Transformer, UNet, build_network

SMALL_UNET = {"base_channels": 8, "num_groups": 4}
SMALL_TRANSFORMER = {"dim": 32, "depth": 2, "heads": 4}


def make(kind: str, num_classes: int | None = None, **kwargs) -> tuple[nn.Module, torch.Tensor]:
    """A small network of each kind and a matching input batch of 3."""
    torch.manual_seed(0)
    if kind == "unet":
        net = UNet(in_channels=1, out_channels=2, num_classes=num_classes, attention_resolutions=(14,),
                   **SMALL_UNET, **kwargs)
        return net, torch.randn(3, 1, 28, 28)
    if kind == "transformer":
        net = Transformer(in_features=5, out_features=4, seq_len=12, num_classes=num_classes,
                          **SMALL_TRANSFORMER, **kwargs)
        return net, torch.randn(3, 12, 5)
    if kind == "mlp":
        return MLP(in_features=2, out_features=3, hidden=32, num_classes=num_classes, **kwargs), torch.randn(3, 2)
    return Siren(in_features=2, out_features=3, hidden=32, num_classes=num_classes, **kwargs), torch.randn(3, 2)


def output_layer(net: nn.Module) -> nn.Module:
    return {UNet: lambda n: n.conv_out, Transformer: lambda n: n.head, MLP: lambda n: n.out,
            Siren: lambda n: n.out}[type(net)](net)


def perturb_output_layer(net: nn.Module) -> None:
    """Give the zero-initialised output layer random weights, so the output depends on everything upstream."""
    with torch.no_grad():
        for p in output_layer(net).parameters():
            p.normal_(0.0, 0.1)


T = torch.tensor([0.1, 0.5, 0.9])


# --- shapes -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("size", "c_in", "c_out", "kwargs"),
    [
        (28, 1, 1, {}),
        (28, 1, 2, {"attention_resolutions": (14, 7)}),
        (28, 1, 2, {"num_classes": 10}),
        (32, 3, 3, {"attention_resolutions": (16, 8), "num_res_blocks": 2}),
        (32, 3, 6, {"channel_mult": (1, 2, 2, 2)}),
        (64, 1, 2, {"channel_mult": (1, 2, 2, 2), "attention_resolutions": (16,), "num_classes": 3}),
        (64, 1, 1, {"channel_mult": (1, 2, 2), "attention_resolutions": (8,), "patch_size": 2}),
        (32, 3, 6, {"patch_size": 4}),
    ],
)
def test_unet_shapes(size, c_in, c_out, kwargs):
    net = UNet(in_channels=c_in, out_channels=c_out, image_size=size, **SMALL_UNET, **kwargs)
    x = torch.randn(2, c_in, size, size)
    cond = torch.tensor([0, 1]) if "num_classes" in kwargs else None
    assert net(x, torch.rand(2), cond).shape == (2, c_out, size, size)


def test_default_mnist_unet_shape():
    net = UNet(in_channels=1, out_channels=2)
    assert net(torch.randn(2, 1, 28, 28), torch.rand(2)).shape == (2, 2, 28, 28)


@pytest.mark.parametrize("kind", ["transformer", "mlp", "siren"])
@pytest.mark.parametrize("num_classes", [None, 4])
def test_other_shapes(kind, num_classes):
    net, x = make(kind, num_classes)
    cond = torch.tensor([0, 3, 4]) if num_classes else None
    out = net(x, T, cond)
    expected = {"transformer": (3, 12, 4), "mlp": (3, 3), "siren": (3, 3)}[kind]
    assert out.shape == expected


def test_transformer_shorter_sequence():
    net, x = make("transformer")
    assert net(x[:, :7], T).shape == (3, 7, 4)


def test_local_mixing_sees_exactly_its_neighbours():
    """The depthwise convolution of width k: the output at position i has a non-zero gradient with respect to
    inputs i - k//2 .. i + k//2 only (zero padded at the ends)."""
    from bfn.networks.transformer import LocalMixing

    torch.manual_seed(0)
    for k in (3, 5):
        mix = LocalMixing(dim=6, kernel=k)
        x = torch.randn(1, 10, 6, requires_grad=True)
        mix(x)[0, 4].sum().backward()
        touched = (x.grad[0].abs().sum(1) > 0).nonzero().flatten().tolist()
        assert touched == list(range(4 - k // 2, 4 + k // 2 + 1))


def test_transformer_local_kernel_option():
    net = Transformer(in_features=5, out_features=4, seq_len=12, dim=8, depth=2, heads=2, local_kernel=3)
    assert net(torch.randn(3, 12, 5), torch.rand(3)).shape == (3, 12, 4)
    with pytest.raises(ConfigError, match="local_kernel must be 0 \\(none\\) or an odd width, got 4"):
        Transformer(in_features=5, out_features=4, seq_len=12, dim=8, heads=2, local_kernel=4)


# --- initialisation and gradients ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["unet", "transformer", "mlp"])
def test_zero_init_output_and_gradients(kind):
    net, x = make(kind, num_classes=4)
    cond = torch.tensor([0, 1, 1])
    out = net(x, T, cond)
    assert torch.equal(out, torch.zeros_like(out))

    # a zero output layer blocks the gradient upstream: every parameter gets a grad tensor, only the
    # output layer's is non-zero
    (out * torch.randn_like(out)).sum().backward()
    head = {id(p) for p in output_layer(net).parameters()}
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert (p.grad.abs().sum() > 0) == (id(p) in head), name

    # with a random output layer every parameter gets a non-zero gradient, except the label-embedding rows
    # of labels absent from the batch (2, 3 and the null label 4)
    perturb_output_layer(net)
    net.zero_grad(set_to_none=True)
    out = net(x, T, cond)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        if name.endswith("label.weight"):
            used = p.grad.abs().sum(dim=1) > 0
            assert used.tolist() == [True, True, False, False, False], name
        else:
            assert p.grad.abs().sum() > 0, name


def test_unet_only_output_layer_is_zero_initialised():
    net, x = make("unet")
    perturb_output_layer(net)
    assert net(x, T).abs().mean() > 0


def test_siren_init_bounds():
    net = Siren(in_features=2, out_features=1, hidden=64, depth=3, bandwidth=10.0)
    assert net.layers[0].weight.abs().max() <= 1 / 3
    bound = (6 / 64) ** 0.5 / 10.0
    for layer in [*net.layers[1:], net.out]:
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound


# --- the inputs matter ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["unet", "transformer", "mlp", "siren"])
def test_time_matters(kind):
    net, x = make(kind)
    perturb_output_layer(net)
    x = x[:1].expand(2, *x.shape[1:])
    out = net(x, torch.tensor([0.1, 0.9]))
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("kind", ["unet", "transformer", "mlp", "siren"])
def test_label_matters(kind):
    net, x = make(kind, num_classes=3)
    perturb_output_layer(net)
    x = x[:1].expand(3, *x.shape[1:])
    t = torch.full((3,), 0.5)
    out = net(x, t, torch.tensor([0, 1, 3]))
    assert not torch.allclose(out[0], out[1])
    assert not torch.allclose(out[0], out[2])
    # cond=None on a conditional network is the null label
    torch.testing.assert_close(net(x[:1], t[:1]), out[2:])


# --- errors -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["unet", "transformer", "mlp", "siren"])
def test_cond_on_unconditional_net_raises(kind):
    net, x = make(kind)
    with pytest.raises(ValueError, match="num_classes=None"):
        net(x, T, torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_bad_t_or_cond_shape_raises(kind):
    net, x = make(kind, num_classes=2)
    with pytest.raises(ValueError, match="t must have shape"):
        net(x, torch.tensor(0.5))
    with pytest.raises(ValueError, match="cond must be a LongTensor"):
        net(x, T, torch.zeros(3))


def test_unet_wrong_spatial_size_raises():
    net = UNet(in_channels=1, out_channels=1, **SMALL_UNET)
    with pytest.raises(ValueError, match="divisible by 4, got 30x30"):
        net(torch.randn(1, 1, 30, 30), torch.rand(1))
    with pytest.raises(ValueError, match=r"input \[B, 1, H, W\]"):
        net(torch.randn(1, 3, 28, 28), torch.rand(1))


def test_unet_patches_run_the_unet_at_a_lower_resolution():
    """patch_size p: the first conv sees p*p times the channels at H/p, the output is put back pixel by pixel, and
    the convolution FLOPs drop about p*p-fold against the same U-Net at full resolution."""
    from torch.utils.flop_counter import FlopCounterMode

    x, t = torch.randn(2, 1, 32, 32), torch.rand(2)
    flops = {}
    for p in (1, 2):
        net = UNet(in_channels=1, out_channels=1, image_size=32, patch_size=p, **SMALL_UNET)
        assert net.conv_in.in_channels == p * p and net.conv_out.out_channels == p * p
        seen: list[tuple[int, ...]] = []
        net.conv_in.register_forward_hook(lambda mod, args, out, seen=seen: seen.append(tuple(args[0].shape)))
        with FlopCounterMode(display=False) as counter:
            net(x, t)
        flops[p] = counter.get_total_flops()
        assert seen == [(2, p * p, 32 // p, 32 // p)]
    assert 3.0 < flops[1] / flops[2] < 4.5
    # the output of pixel (i, j) is channel (i % 2) * 2 + j % 2 of patch (i // 2, j // 2)
    net = UNet(in_channels=1, out_channels=1, image_size=32, patch_size=2, **SMALL_UNET)
    perturb_output_layer(net)
    captured = []
    net.conv_out.register_forward_hook(lambda mod, args, out: captured.append(out))
    y = net(x, t)
    assert torch.equal(y[:, 0, 1::2, 0::2], captured[0][:, 2])


def test_unet_config_errors():
    with pytest.raises(ConfigError, match="patch_size"):
        UNet(in_channels=1, out_channels=1, image_size=28, patch_size=3)
    with pytest.raises(ConfigError, match="attention_resolutions"):
        UNet(in_channels=1, out_channels=1, attention_resolutions=(16,))
    with pytest.raises(ConfigError, match="num_groups"):
        UNet(in_channels=1, out_channels=1, base_channels=12, num_groups=8)


def test_build_network_unknown_name():
    with pytest.raises(ConfigError, match="unknown network 'resnet'; choose one of: mlp, official-cifar-unet, "
                                          "official-mnist-unet, official-text8-gpt, siren, transformer, unet"):
        build_network("resnet")


def test_build_network_unknown_kwarg():
    with pytest.raises(ConfigError, match="network 'unet' has no argument 'channels'; it accepts: in_channels"):
        build_network("unet", in_channels=1, out_channels=1, channels=32)
    with pytest.raises(ConfigError, match="needs the argument\\(s\\) seq_len"):
        build_network("transformer", in_features=3, out_features=3)
    with pytest.raises(ConfigError, match=r"network 'transformer': heads \(4\) must divide dim \(30\)"):
        build_network("transformer", in_features=3, out_features=3, seq_len=4, dim=30, heads=4)
    with pytest.raises(ConfigError, match="invalid arguments for network 'mlp'.*it accepts: in_features"):
        build_network("mlp", in_features="2", out_features=1)


def test_build_network_accepts_yaml_lists():
    cfg = OmegaConf.create({"channel_mult": [1, 2], "attention_resolutions": [14], "base_channels": 8,
                            "num_groups": 4})
    net = build_network("unet", in_channels=1, out_channels=1, **cfg)
    assert isinstance(net, UNet)
    assert net(torch.randn(1, 1, 28, 28), torch.rand(1)).shape == (1, 1, 28, 28)
    assert set(NETWORKS) == {"unet", "transformer", "mlp", "siren", "official-mnist-unet", "official-cifar-unet",
                             "official-text8-gpt"}


# --- serialisation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["unet", "transformer", "mlp", "siren"])
def test_state_dict_round_trip(kind):
    net, x = make(kind, num_classes=2)
    perturb_output_layer(net)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)  # a different init, overwritten by the load
    fresh, _ = make(kind, num_classes=2)
    for p in fresh.parameters():
        nn.init.normal_(p)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    cond = torch.tensor([0, 1, 2])
    net.eval()
    fresh.eval()
    assert torch.equal(net(x, T, cond), fresh(x, T, cond))
