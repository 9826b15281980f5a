"""Property-based fuzzing (hypothesis) of every input boundary: configs and overrides, user arrays, checkpoint
files and the models' API.

Each test states one contract: an input is either accepted, and then the result is valid, or rejected with one of
bfn's own one-line errors (`bfn.errors`); any other exception is a bug. The example counts are set so that the
whole file takes a few seconds; run with `--hypothesis-show-statistics` to see how many cases each test ran.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bfn.config import RunConfig, from_dict, load_config, merge_overrides, to_dict
from bfn.data import load_dataset
from bfn.data.spec import DataSpec
from bfn.errors import BFNError, CheckpointError, ConfigError, DataError
from bfn.models import from_pretrained
from bfn.models.hub import build_model
from bfn.samplers import SAMPLERS
from bfn.training.checkpoint import load_state

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def fuzz(examples: int) -> settings:
    """Hypothesis settings of these tests: `examples` cases, no deadline (the first call imports torch code)."""
    return settings(FUZZ, max_examples=examples)


def is_one_line_bfn_error(err: BaseException) -> bool:
    return isinstance(err, BFNError) and bool(str(err)) and "\n" not in str(err)


def one_line(err: BaseException) -> None:
    """A rejected input: the error is one of bfn's, with a one-line message (counted in the statistics)."""
    assert is_one_line_bfn_error(err), repr(err)
    event(f"rejected: {type(err).__name__}")


def accepted() -> None:
    event("accepted")


# ================================================================ (a) configs, YAML files and key=value overrides

DEFAULTS = to_dict(RunConfig())
BASE = load_config("mixture-1d")  # parsed once: OmegaConf merges cost ~50 ms each
BASE_JSON = json.dumps(to_dict(BASE))


def _dotted(d: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.append(prefix + k)
        if isinstance(v, dict):
            out += _dotted(v, prefix + k + ".")
    return out


KEYS = _dotted(DEFAULTS) + ["model.network.kwargs.hidden", "model.network.kwargs.depth", "data.options.size"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["continuous", "784", "0", "-1", "auto", "discrete", "mlp", "unet", "stop", "skip", "bf16",
                     "mixture-1d", "1e-3", "nan", "inf", "???", "${train.steps}", "${nope}", "[1, 2]", "{a: 1}"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6),
                                                                                            inner, max_size=3),
                      max_leaves=6)


LITERALS = ["continuous", "784", "auto", "discrete", "mlp", "stop", "skip", "no", "bf16", "paper", "linear", "flat"]


def _get(d: Any, dotted: str) -> Any:
    for p in dotted.split("."):
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def typed(default: Any) -> st.SearchStrategy[Any]:
    """Values of the default's type, mostly in range: the near misses a user types (0 steps, lr 1.5, ...)."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(-2, 5000)
    if isinstance(default, float):
        return st.floats(-0.1, 1.5) | st.sampled_from([1e-4, 0.5, 0.999])
    if isinstance(default, str):
        return st.sampled_from(LITERALS)
    if isinstance(default, list):
        return st.lists(st.floats(0, 1.2), min_size=1, max_size=3)
    if isinstance(default, dict):
        return st.dictionaries(st.sampled_from(["hidden", "depth", "size", "seed"]), st.integers(0, 64), max_size=2)
    return values


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[last] = value


@st.composite
def config_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid config dict (the schema defaults over the mixture-1d preset) with a few keys replaced, added or
    removed: the typos and wrong types a hand-edited config.yaml or config.json holds."""
    d = json.loads(BASE_JSON)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(KEYS) | st.text(min_size=1, max_size=10))
        default = _get(d, key)
        _set(d, key, draw(typed(default) if default is not None and draw(st.booleans()) else values))
    if draw(st.integers(0, 3)) == 0:
        section = draw(st.sampled_from(sorted(d)))
        if isinstance(d[section], dict) and d[section]:
            d[section].pop(draw(st.sampled_from(sorted(d[section]))))
    return d


def check_valid(cfg: RunConfig) -> None:
    """What every accepted config guarantees (the trainer relies on it)."""
    t = cfg.train
    assert isinstance(cfg, RunConfig)
    assert t.steps > 0 and t.batch_size > 0 and t.log_every > 0 and t.checkpoint_every > 0
    assert math.isfinite(t.lr) and t.lr > 0
    assert math.isfinite(t.weight_decay) and t.weight_decay >= 0
    assert math.isfinite(t.grad_clip) and t.grad_clip >= 0
    assert len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas)
    assert 0 <= t.ema_decay < 1 and t.warmup_steps >= 0 and t.max_bad_steps >= 0
    assert 0 <= t.seed < 2**32 and t.sample_every >= 0 and t.sample_steps > 0 and t.sample_n > 0
    assert cfg.sample.steps > 0 and cfg.sample.n > 0
    assert 0 <= cfg.model.label_dropout < 1
    assert cfg.model.loss == "continuous" or int(cfg.model.loss) > 0
    assert getattr(t, "threads", 0) >= 0 and cfg.data.num_workers >= 0
    f = cfg.model.flow
    assert 0 < f.sigma_1 < 1 and math.isfinite(f.beta_1) and f.beta_1 > 0 and 0 <= f.t_min < 1


@fuzz(120)
@given(config_dicts())
def test_fuzz_config_dicts(d: dict[str, Any]) -> None:
    """from_dict (how a run's saved config is read back): a valid RunConfig or a one-line ConfigError."""
    try:
        cfg = from_dict(d)
    except ConfigError as err:
        one_line(err)
        return
    accepted()
    check_valid(cfg)


def _render(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (bool, list, dict)) or value is None else str(value)


typed_override = st.sampled_from(KEYS).flatmap(
    lambda k: typed(_get(json.loads(BASE_JSON), k)).map(lambda v: f"{k}={_render(v)}"))
override_text = st.one_of(
    typed_override, typed_override, typed_override,
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=10)),
    st.builds(lambda k, v: f"{k}={json.dumps(v)}", st.sampled_from(KEYS), values),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.sampled_from(
        ["1", "0", "-5", "1e309", "-1e309", "nan", "inf", "2.5", "true", "null", "~", "[", "]", "{", "[0.9]",
         "[0.9, 1.5]", "[0.9, nan]", "${train.steps}", "${nope}", "${oc.env:HOME}", "???", "4294967296", "-1",
         "'1'", "mlp", "continuous", "0x10", "1_000"])),
    st.text(max_size=16),
)


@fuzz(150)
@given(st.lists(override_text, max_size=3))
def test_fuzz_overrides(overrides: list[str]) -> None:
    """`key=value` overrides from the command line: a valid RunConfig or a one-line ConfigError."""
    try:
        cfg = merge_overrides(BASE, overrides)
    except ConfigError as err:
        one_line(err)
        return
    accepted()
    check_valid(cfg)


yaml_text = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60),  # not UTF-8 text at all
    st.builds(lambda d: json.dumps(d), config_dicts()),  # JSON is YAML
    st.builds(lambda k, v: f"{k}: {v}\n", st.sampled_from(["train", "model", "name", "data", "x"]),
              st.sampled_from(["[", "{a: 1", "- 1\n- 2", "!!python/object:os.system ls", "&a [*a]", "*nope",
                               "{steps: 3}", "3", "null", "'", "\t1", "{{}}"])),
)


@fuzz(100)
@given(yaml_text, st.sampled_from([".yaml", ".yml"]))
def test_fuzz_yaml_files(text: str | bytes, suffix: str) -> None:
    """A user's YAML file through load_config: a valid RunConfig or a one-line ConfigError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"c{suffix}"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            cfg = load_config(str(path))
        except ConfigError as err:
            one_line(err)
            return
    accepted()
    check_valid(cfg)


@fuzz(60)
@given(st.one_of(st.text(max_size=40), st.text(alphabet="ab./-~ \x00", min_size=200, max_size=3000),
                 st.builds(lambda s: s + ".yaml", st.text(max_size=300)), st.sampled_from([".", "..", "/", "~", ""])))
def test_fuzz_preset_names(name: str) -> None:
    """Whatever is typed as the preset name: a valid RunConfig or a one-line ConfigError."""
    try:
        cfg = load_config(name)
    except ConfigError as err:
        one_line(err)
        return
    accepted()
    check_valid(cfg)


# ================================================================ (b) user arrays (the `array` dataset)

dtypes = st.one_of(hnp.boolean_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                   hnp.floating_dtypes(), hnp.complex_number_dtypes(), hnp.datetime64_dtypes(),
                   st.just(np.dtype("U3")))
arrays = hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))
counts = st.one_of(st.none(), st.integers(-3, 300), st.sampled_from([2, 16, 256, 2**40]), st.floats(0, 20),
                   st.booleans(), st.text(max_size=3))


@st.composite
def user_data(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray | None, str, Any, Any]:
    """Data that fits its declared kind (10-30 examples), with at most one fault: NaN, Inf, an out-of-range
    value, a wrong dtype, bad labels, bad counts or a wrong shape."""
    kind = draw(st.sampled_from(["continuous", "discretized", "discrete"]))
    n = draw(st.integers(10, 30))
    shape = (n, *draw(st.sampled_from([(1,), (3,), (1, 4, 4)])))
    k = draw(st.integers(2, 256))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "continuous":
        x = rng.standard_normal(shape).astype(draw(st.sampled_from([np.float16, np.float32, np.float64])))
    elif kind == "discrete" or draw(st.booleans()):
        x = rng.integers(0, k, shape).astype(draw(st.sampled_from([np.int64, np.int32, np.uint8, np.int16])))
    else:
        x = ((2 * rng.integers(0, k, shape) + 1) / k - 1).astype(draw(st.sampled_from([np.float32, np.float64])))
    labels = rng.integers(0, 10, n) if draw(st.booleans()) else None
    num_bins, num_classes = (k if kind == "discretized" else None), (k if kind == "discrete" else None)
    fault = draw(st.sampled_from(["none", "nan", "inf", "range", "dtype", "labels", "counts", "shape"]))
    i = draw(st.integers(0, x.size - 1))
    if fault in ("nan", "inf", "range"):
        x = x.astype(np.float64)
        x.flat[i] = {"nan": math.nan, "inf": -math.inf, "range": 1e300 if kind == "continuous" else k}[fault]
    elif fault == "dtype":
        x = x.astype(draw(st.sampled_from([np.complex64, np.bool_, np.float16, "U4", "M8[s]"])))
    elif fault == "labels":
        labels = draw(st.sampled_from([rng.integers(-2, 3, n), rng.integers(0, 3, n + 1), rng.random(n),
                                       rng.integers(0, 3, (n, 2))]))
    elif fault == "counts":
        num_bins, num_classes = draw(counts), draw(counts)
    elif fault == "shape":
        x = draw(st.sampled_from([x[: n // 3], x.reshape(-1), x[0].reshape(-1)[0], x[:0]]))
    return x, labels, kind, num_bins, num_classes


random_data = st.tuples(arrays, st.none() | arrays, st.sampled_from(["continuous", "discretized", "discrete",
                                                                     "image", None]), counts, counts)


@fuzz(150)
@given(data=st.one_of(user_data(), random_data), npz=st.booleans(), split=st.sampled_from(["train", "test"]))
@example(data=(np.full((20, 2), 1e300), None, "continuous", None, None), npz=False,
         split="train")  # finite in float64, Inf in float32
@example(data=(np.array(3.0), None, "continuous", None, None), npz=True, split="test")
@example(data=(np.arange(20), None, "discretized", 2**40, None), npz=False, split="train")
def test_fuzz_user_arrays(data: tuple[np.ndarray, np.ndarray | None, Any, Any, Any], npz: bool, split: str) -> None:
    """Any array (shape, dtype, NaN, Inf, out-of-range values), labels and options: valid data or a DataError."""
    x, labels, kind, num_bins, num_classes = data
    options = {"kind": kind, "num_bins": num_bins, "num_classes": num_classes}
    with tempfile.TemporaryDirectory() as tmp:
        if npz:
            path = Path(tmp) / "d.npz"
            np.savez(path, x=x, **({} if labels is None else {"labels": labels}))
        else:
            path = Path(tmp) / "d.npy"
            np.save(path, x)
        try:
            ds, spec = load_dataset("array", split, path=str(path), **options)
        except (DataError, ConfigError) as err:
            one_line(err)
            return
    accepted()
    n = len(ds)
    assert n > 0 and (kind is None or spec.kind == kind)  # None: inferred from the values
    xs = torch.stack([ds[i][0] for i in range(n)])
    ys = torch.stack([ds[i][1] for i in range(n)])
    assert tuple(xs.shape[1:]) == tuple(spec.shape) and ys.shape == (n,)
    if spec.kind == "continuous":  # the kind asked for, or the one inferred from the values
        assert xs.dtype == torch.float32 and torch.isfinite(xs).all()
    elif spec.kind == "discrete":
        assert xs.dtype == torch.int64 and xs.min() >= 0 and xs.max() < spec.num_classes
    else:
        k = spec.num_bins
        assert xs.dtype == torch.float32 and xs.abs().max() <= 1
        assert torch.allclose(((xs + 1) * k - 1) / 2, (((xs + 1) * k - 1) / 2).round(), atol=1e-3)
    if npz and labels is not None:
        assert spec.num_labels == int(np.max(labels)) + 1
    if spec.num_labels is None:
        assert (ys == -1).all()
    else:
        assert ys.min() >= 0 and ys.max() < spec.num_labels


# ================================================================ (c) checkpoint files: random bytes and damage

FILES = ("model.safetensors", "state.pt", "config.json")


def load_all(run: Path) -> None:
    """Everything a user does with a run directory: load the weights, load the resume state."""
    from_pretrained(run)
    load_state(run)


def check_damaged(run: Path, name: str, data: bytes) -> None:
    """Put `data` in place of file `name` of a scratch copy of `run`, load the copy, restore the file."""
    copy = run.parent / "damaged"
    if not copy.exists():
        shutil.copytree(run, copy)
    try:
        (copy / name).write_bytes(data)
        load_all(copy)
        accepted()
    except (CheckpointError, ConfigError) as err:
        one_line(err)
    finally:
        shutil.copyfile(run / name, copy / name)


@fuzz(60)
@given(name=st.sampled_from(FILES), data=st.binary(max_size=400))
def test_fuzz_random_checkpoint_bytes(tiny_run: Path, name: str, data: bytes) -> None:
    """Random bytes in place of any file of a run: a CheckpointError (or ConfigError), never a raw exception."""
    check_damaged(tiny_run, name, data)


@st.composite
def damage(draw: st.DrawFn, original: bytes) -> bytes:
    """A truncation, a few bit flips or an overwritten span of `original`."""
    b = bytearray(original)
    how = draw(st.sampled_from(["truncate", "flip", "overwrite"]))
    if how == "truncate":
        return bytes(b[:draw(st.integers(0, len(b) - 1))])
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(b)
    i = draw(st.integers(0, len(b) - 1))
    b[i:i + 16] = draw(st.binary(min_size=1, max_size=16))
    return bytes(b)


@fuzz(120)
@given(data=st.data(), name=st.sampled_from(FILES))
def test_fuzz_damaged_checkpoint(tiny_run: Path, data: st.DataObject, name: str) -> None:
    """Truncations, bit flips and overwritten spans of a real tiny checkpoint: a CheckpointError (or ConfigError)
    or, where the damage left the file valid, a model that loads."""
    original = (tiny_run / name).read_bytes()
    damaged = data.draw(damage(original))
    assume(damaged != original)
    check_damaged(tiny_run, name, damaged)


# ================================================================ (d) the models' API: loss, nll and sample

def tiny_model(kind: str, conditional: bool = False) -> torch.nn.Module:
    cfg = load_config("mixture-1d", ["model.network.kwargs.hidden=8", "model.network.kwargs.depth=1",
                                     f"model.conditional={str(conditional).lower()}"]).model
    info = DataSpec(kind=kind, shape=(3,), num_classes=3 if kind == "discrete" else None,
                    num_bins=8 if kind == "discretized" else None, num_labels=4 if conditional else None)
    torch.manual_seed(0)
    return build_model(cfg, info).eval()


MODELS = {(k, c): tiny_model(k, c) for k in ("continuous", "discretized", "discrete") for c in (False, True)}

tensor_dtypes = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                                 torch.int32, torch.uint8, torch.bool, torch.complex64])
shapes = st.one_of(st.just((2, 3)), st.lists(st.integers(0, 4), max_size=4).map(tuple))
fill = st.sampled_from(["valid", "normal", "huge", "nan", "inf", "negative", "int-range"])


def make_tensor(shape: tuple[int, ...], dtype: torch.dtype, how: str, kind: str, gen: torch.Generator) -> torch.Tensor:
    if how == "valid":
        if kind == "discrete":
            x = torch.randint(0, 3, shape, generator=gen)
        elif kind == "discretized":
            x = (2 * torch.randint(0, 8, shape, generator=gen) + 1) / 8 - 1
        else:
            x = torch.rand(shape, generator=gen) * 2 - 1
    elif how == "normal":
        x = torch.randn(shape, generator=gen)
    elif how == "huge":
        x = torch.full(shape, 1e30)
    elif how == "nan":
        x = torch.full(shape, math.nan)
    elif how == "inf":
        x = torch.full(shape, -math.inf)
    elif how == "negative":
        x = -torch.ones(shape) * 5
    else:
        x = torch.randint(-3, 300, shape, generator=gen).float()
    try:
        return x.to(dtype)
    except RuntimeError:
        return x.to(torch.float32)


labels = st.one_of(st.none(), st.integers(-3, 6), st.lists(st.integers(-3, 6), max_size=4),
                   st.sampled_from(["float", "2d"]))


def make_cond(spec: Any, batch: int) -> Any:
    if spec is None or isinstance(spec, int):
        return spec
    if spec == "float":
        return torch.full((batch,), 1.5)
    if spec == "2d":
        return torch.zeros(batch, 2, dtype=torch.long)
    return torch.tensor(spec, dtype=torch.long)


# Every input is held to the contract: a valid result or a one-line bfn error, never one of these.
RAW = (TypeError, ValueError, IndexError, RuntimeError, OverflowError, NotImplementedError)


KINDS = ["continuous", "discretized", "discrete"]
NATURAL = {"continuous": torch.float32, "discretized": torch.float32, "discrete": torch.int64}


@st.composite
def loss_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid call of loss / nll / reconstruction_loss with at most one fault: the batch's shape, dtype or values,
    the labels, or the step count."""
    kind, conditional = draw(st.sampled_from(KINDS)), draw(st.booleans())
    b = draw(st.integers(1, 4))
    method = draw(st.sampled_from(["loss", "nll", "reconstruction_loss"]))
    inp = {"kind": kind, "conditional": conditional, "shape": (b, 3), "dtype": NATURAL[kind], "how": "valid",
           "cond": draw(st.lists(st.integers(0, 4), min_size=b, max_size=b)) if conditional and draw(
               st.booleans()) else None,
           "loss": draw(st.sampled_from(["continuous", 1, 10] if method == "loss" else ["inf", 1, 10, "10"])),
           "method": method}
    fault = draw(st.sampled_from(["none", "shape", "dtype", "how", "cond", "loss"]))
    if fault != "none":
        inp[fault] = draw({"shape": shapes, "dtype": tensor_dtypes, "how": fill, "cond": labels,
                           "loss": st.sampled_from([0, -2, 2.5, "abc", None, True, "0", "continuous", 7])}[fault])
    return inp


@fuzz(200)
@given(inp=loss_inputs())
def test_fuzz_model_loss(inp: dict[str, Any]) -> None:
    """BFN.loss / nll / reconstruction_loss with wrong shapes, dtypes, values, labels and step counts: a finite
    per-example loss [B] or a one-line bfn error."""
    kind, shape, how, cond, loss, method = (inp[k] for k in ("kind", "shape", "how", "cond", "loss", "method"))
    model = MODELS[(kind, inp["conditional"])]
    gen = torch.Generator().manual_seed(0)
    x = make_tensor(shape, inp["dtype"], how, kind, gen)
    c = make_cond(cond, shape[0] if shape else 1)
    if isinstance(c, int):
        c = torch.full((shape[0] if shape else 1,), c)
    try:
        if method == "loss":
            out = model.loss(x, loss=loss, cond=c, generator=gen)
        elif method == "nll":
            out = model.nll(x, loss, cond=c, generator=gen)
        else:
            out = model.reconstruction_loss(x, cond=c, generator=gen)
    except BFNError as err:
        one_line(err)
        return
    accepted()
    assert out.shape == (x.shape[0],)
    assert torch.isfinite(out).all()


@st.composite
def sample_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid call of sample with at most one fault: n, steps, sampler, labels, guidance or final."""
    kind, conditional = draw(st.sampled_from(KINDS)), draw(st.booleans())
    n = draw(st.integers(1, 4))
    cond = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)) if conditional and draw(st.booleans()) else None
    inp = {"kind": kind, "conditional": conditional, "n": n, "steps": draw(st.integers(1, 4)),
           "sampler": draw(st.sampled_from(sorted(SAMPLERS))), "cond": cond,
           "guidance": draw(st.sampled_from([None, 0.0, 1.5])) if cond is not None else None,
           "final": draw(st.sampled_from(["sample", "mode", "mean"]))}
    fault = draw(st.sampled_from(["none", "n", "steps", "sampler", "cond", "guidance", "final"]))
    if fault != "none":
        inp[fault] = draw({"n": st.sampled_from([0, -1, 2.0, "4", None, True]),
                           "steps": st.sampled_from([0, -5, 2.5, "10", True, None]),
                           "sampler": st.sampled_from(["nope", "", "PAPER"]), "cond": labels,
                           "guidance": st.sampled_from([-1.0, math.nan, math.inf, 2.0]),
                           "final": st.sampled_from(["best", "", None])}[fault])
    return inp


@fuzz(150)
@given(inp=sample_inputs())
def test_fuzz_model_sample(inp: dict[str, Any]) -> None:
    """BFN.sample with bad counts, step numbers, sampler names, labels, guidance scales: samples of the data's
    shape and type or a one-line bfn error."""
    kind, n, steps, sampler, cond, guidance, final = (inp[k] for k in ("kind", "n", "steps", "sampler", "cond",
                                                                         "guidance", "final"))
    model = MODELS[(kind, inp["conditional"])]
    gen = torch.Generator().manual_seed(0)
    c = make_cond(cond, n if isinstance(n, int) and n > 0 else 1)
    try:
        x = model.sample(n, steps, sampler=sampler, generator=gen, cond=c, guidance=guidance, final=final)
    except BFNError as err:
        one_line(err)
        return
    accepted()
    assert guidance is None or math.isfinite(guidance), "a non-finite guidance scale was accepted"
    if kind == "discrete" and final == "mean":  # e-hat, the expected one-hot vector (flows/distributions.py)
        assert x.shape == (n, 3, 3) and torch.allclose(x.sum(-1), torch.ones(n, 3))
    elif kind == "discrete":
        assert x.shape == (n, 3) and x.dtype == torch.int64 and x.min() >= 0 and x.max() < 3
    else:
        assert x.shape == (n, 3)
        assert x.is_floating_point()
    assert torch.isfinite(x.float()).all()


def _model(kind: str, conditional: bool = False) -> torch.nn.Module:
    return MODELS[(kind, conditional)]


FIXED = {
    "G1 label for an unconditional model in loss": lambda: _model("continuous").loss(
        torch.zeros(2, 3), cond=torch.tensor([0, 1])),
    "G2 label out of range in loss": lambda: _model("continuous", True).loss(
        torch.zeros(2, 3), cond=torch.tensor([-3, 9])),
    "G2 labels of the wrong shape in sample": lambda: _model("continuous", True).sample(
        2, 2, cond=torch.zeros(2, 2, dtype=torch.long)),
    "G2 empty labels in sample": lambda: _model("discrete", True).sample(2, 2, cond=torch.zeros(0, dtype=torch.long)),
    "G3 nll with steps='abc'": lambda: _model("continuous").nll(torch.zeros(2, 3), "abc"),
    "G4 discrete data with Inf": lambda: _model("discrete").loss(torch.full((2, 3), math.inf)),
    "G4 empty discrete batch": lambda: _model("discrete").loss(torch.zeros(0, 3, dtype=torch.long)),
    "G4 complex discrete data": lambda: _model("discrete").loss(torch.zeros(2, 3, dtype=torch.complex64)),
    "G6 n=2.0 samples": lambda: _model("continuous").sample(2.0, 2),
    "G5 continuous data of 1e30": lambda: _model("continuous").loss(torch.full((2, 3), 1e30)),
    "G7 guidance=nan": lambda: _model("continuous", True).sample(2, 2, cond=torch.tensor([0, 1]), guidance=math.nan),
}


@pytest.mark.parametrize("call", list(FIXED.values()), ids=list(FIXED))
def test_former_api_gaps_give_one_line_errors(call: Any) -> None:
    """Inputs that once raised raw exceptions (or gave NaN samples) now end in a one-line bfn error."""
    with pytest.raises(BFNError) as info:
        call()
    assert is_one_line_bfn_error(info.value), repr(info.value)
