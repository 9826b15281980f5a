"""Your own array, understood: its layout, data type, number of bins/classes and value range, inferred from the
values when not declared, and the two maps between the user's format and the model's data format.

The model's data format (see `bfn.data.spec.DataSpec`): images [N, C, H, W], sequences/vectors [N, D]; discrete
data as class indices 0..K-1, discretized data as the centres (2k+1)/K - 1 of K bins on [-1, 1] (Graves et al.
2023, §5), continuous data as real values of about unit scale on [-1, 1] (the range the paper's sigma_1 and the
networks assume). `UserFormat` records what the user's file looked like so that samples go back to it: same
axis order, same dtype, same values (grey levels, original class values, original units).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bfn.errors import DataError

#: axis orders a user's array may have (N: examples)
LAYOUTS = ("N", "ND", "NHW", "NHWC", "NCHW")
KINDS = ("continuous", "discretized", "discrete")
MAX_CLASSES = 256  # integer data with at most this many distinct values (non-image) is discrete
MAX_BINS = 2**16  # integer image data with a range up to this is discretized
MIN_SEQUENCE = 8  # discrete rows at least this long are sequences (a Transformer); shorter ones vectors (an MLP)
CHANNELS = (1, 2, 3, 4)  # channel counts recognised in 4-D arrays


@dataclass(frozen=True)
class UserFormat:
    """How the user's array maps onto the model's data format, and back.

    Attributes:
        layout: the user's axis order, one of `LAYOUTS` (N = examples, C channels, H x W pixels, D features).
        kind: "continuous", "discretized" or "discrete".
        num_bins: K of discretized data: integer values low..high fall into K equal bins.
        values: the original values of classes 0..K-1 of discrete data (sorted).
        low, high: the value range: discretized data span the integers low..high; continuous data are mapped from
            [low, high] to [-1, 1] (None: used as they are); for continuous vectors (layout ND) one range per
            column (lists of D values), so that columns in different units each fill [-1, 1].
        dtype: numpy dtype name of the user's array (samples are cast back to it).
    """

    layout: str
    kind: str
    num_bins: int | None = None
    values: list[int] | None = None
    low: float | list[float] | None = None
    high: float | list[float] | None = None
    dtype: str = "float32"
    notes: list[str] = field(default_factory=list, compare=False)

    # --- user -> model --------------------------------------------------------------------------------------
    def to_model(self, x: np.ndarray) -> torch.Tensor:
        """The user's array [N, ...] -> model-format tensor (int64 classes or float32 values)."""
        x = to_channels_first(x, self.layout)
        if self.kind == "discrete":
            return torch.from_numpy(_class_indices(x, self.values))
        if self.kind == "discretized":
            low, high = self.range if self.low is not None else (None, None)
            return torch.from_numpy(_bin_centres(x, self.bins, low, high))
        return torch.from_numpy(_scale(x, self.low, self.high))

    @property
    def bins(self) -> int:
        """K of discretized data (set whenever kind is "discretized")."""
        assert self.num_bins is not None, "discretized formats carry num_bins"
        return self.num_bins

    @property
    def range(self) -> tuple[float, float]:
        """(low, high) where one range is set for all values."""
        assert isinstance(self.low, int | float) and isinstance(self.high, int | float), "one range is set"
        return self.low, self.high

    def scales(self, dims: int) -> np.ndarray:
        """The factor s of x = m + s x' from the model's [-1, 1] back to the user's units, per value of an example
        of `dims` values (all 1 without a range): -ln p(x) = -ln p(x') + sum ln s."""
        if self.low is None or self.high is None:
            return np.ones(dims)
        half = (np.asarray(self.high, np.float64) - np.asarray(self.low, np.float64)) / 2
        return np.tile(half, dims // half.size) if half.ndim else np.full(dims, half)

    # --- model -> user --------------------------------------------------------------------------------------
    def to_user(self, x: torch.Tensor) -> np.ndarray:
        """Model-format samples [N, *S] -> an array in the user's layout, value range and dtype."""
        a = x.detach().cpu()
        if self.kind == "discrete":
            idx = a.long().numpy()
            out = np.asarray(self.values)[idx] if self.values is not None else idx
        elif self.kind == "discretized":
            bins = self.bins
            k = ((a.double() + 1) * bins / 2 - 0.5).round().clamp(0, bins - 1).long().numpy()
            if self.low is None:  # given as bin centres: back to bin centres
                out = ((2 * k + 1) / bins - 1).astype(np.float32)
            else:
                low, high = self.range
                out = low + np.floor((k + 0.5) * (high - low + 1) / bins)
        else:
            v = a.double().numpy()
            if self.low is None or self.high is None:
                out = v
            else:  # scalars, or one range per column (the last axis of vectors)
                lo, hi = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
                out = (v + 1) / 2 * (hi - lo) + lo
        out = from_channels_first(out, self.layout)
        dtype = np.dtype(self.dtype)
        if dtype.kind in "iub":
            info = np.iinfo(dtype) if dtype.kind != "b" else None
            out = np.rint(out)
            if info is not None:
                out = np.clip(out, info.min, info.max)
        return out.astype(dtype)

    # --- description -----------------------------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """The `data.options` that reproduce this format exactly (saved in the run's config.yaml)."""
        out: dict[str, Any] = {"layout": self.layout, "kind": self.kind, "dtype": self.dtype}
        if self.num_bins is not None:
            out["num_bins"] = self.num_bins
        if self.values is not None:
            out["values"] = list(self.values)
        if self.low is not None:
            out["low"], out["high"] = self.low, self.high
        return out

    def describe(self) -> str:
        """What was chosen, in a few words (e.g. 'discretized, 17 bins for the integers 0..16')."""
        if self.kind == "discrete":
            vals = self.values or []
            shown = ", ".join(str(v) for v in vals[:6]) + (", ..." if len(vals) > 6 else "")
            return f"discrete, {len(vals)} classes (values {shown})"
        if self.kind == "discretized":
            if self.low is None:
                return f"discretized, {self.num_bins} bins (bin centres in [-1, 1])"
            low, high = self.range
            return f"discretized, {self.num_bins} bins for the integers {_num(low)}..{_num(high)}"
        if self.low is None or self.high is None:
            return "continuous (values used as they are)"
        if isinstance(self.low, list) and isinstance(self.high, list):
            shown = ", ".join(f"[{_num(lo)}, {_num(hi)}]" for lo, hi in zip(self.low[:3], self.high[:3], strict=True))
            more = ", ..." if len(self.low) > 3 else ""
            return (f"continuous, each of the {len(self.low)} columns scaled to [-1, 1] from its range ({shown}"
                    f"{more}; samples are mapped back)")
        low, high = self.range
        return f"continuous, values in [{_num(low)}, {_num(high)}] scaled to [-1, 1] (samples are mapped back)"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


# --- layouts -------------------------------------------------------------------------------------------------
def model_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """Shape of one example in the model's format for a user array of `shape` [N, ...] in `layout`."""
    rest = tuple(shape[1:])
    if layout == "N":
        return (1,)
    if layout == "NHW":
        return (1, *rest)
    if layout == "NHWC":
        h, w, c = rest
        return (c, h, w)
    return rest


def to_channels_first(x: np.ndarray, layout: str) -> np.ndarray:
    """The user's array -> [N, C, H, W] images, [N, D] vectors ([N] becomes [N, 1])."""
    if layout == "N":
        return x.reshape(-1, 1)
    if layout == "NHW":
        return x[:, None]
    if layout == "NHWC":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def from_channels_first(x: np.ndarray, layout: str) -> np.ndarray:
    """Inverse of `to_channels_first`."""
    if layout == "N":
        return x.reshape(-1)
    if layout == "NHW":
        return x[:, 0]
    if layout == "NHWC":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x


def is_image_layout(layout: str) -> bool:
    return layout in ("NHW", "NHWC", "NCHW")


def infer_layout(shape: tuple[int, ...]) -> str:
    """The axis order of an array [N, ...]: 1-D scalars, 2-D rows, 3-D grey images, 4-D images with the channel
    axis where the small dimension (1-4) is."""
    nd = len(shape)
    if nd == 1:
        return "N"
    if nd == 2:
        return "ND"
    if nd == 3:
        return "NHW"
    if nd == 4:
        first, last = shape[1] in CHANNELS, shape[3] in CHANNELS
        if last and not first:
            return "NHWC"
        if first and not last:
            return "NCHW"
        if first and last:  # e.g. (N, 3, 5, 3): prefer channels first, as PyTorch does
            return "NCHW" if shape[1] <= shape[3] else "NHWC"
        raise DataError(f"cannot tell the channel axis of an array of shape {shape}: neither axis 1 nor axis 3 "
                        "has 1-4 channels; give data.options.layout=NCHW or NHWC")
    raise DataError(f"an array of shape {shape} has {nd} axes; bfn takes (N,), (N, D), (N, H, W), (N, H, W, C) or "
                    "(N, C, H, W); reshape it")


def check_layout(shape: tuple[int, ...], layout: str) -> None:
    want = {"N": 1, "ND": 2, "NHW": 3, "NHWC": 4, "NCHW": 4}
    if layout not in want:
        raise DataError(f"unknown data.options.layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if len(shape) != want[layout]:
        raise DataError(f"data.options.layout={layout} needs a {want[layout]}-D array, but the data has shape "
                        f"{shape}; drop the option to infer it")


# --- data types ----------------------------------------------------------------------------------------------
def infer_format(x: np.ndarray, options: dict[str, Any] | None = None) -> UserFormat:
    """The `UserFormat` of array `x` [N, ...]: every key given in `options` (layout, kind, num_bins,
    num_classes, values, low, high) is taken as is, the rest is inferred from the values:

    - bool data, or integers with exactly two values: discrete, 2 classes;
    - integer images: discretized, one bin per integer from min(0, min) to the max (uint8 with values above 127:
      0..255, 256 bins);
    - other integers: discrete with one class per distinct value, up to 256 classes; beyond that continuous;
    - floats: continuous, scaled from [min, max] to [-1, 1] when they leave [-1, 1] (vectors [N, D]: each column
      from its own [min, max]).
    """
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    check_numeric(x)
    layout = opts.get("layout") or infer_layout(x.shape)
    check_layout(x.shape, layout)
    dtype = str(opts.get("dtype") or x.dtype.name)
    kind = opts.get("kind")
    if kind is not None and kind not in KINDS:
        raise DataError(f"data.options.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    integer = x.dtype.kind in "biu"
    if kind is None:
        kind = _infer_kind(x, layout, opts)
    if kind == "discrete":
        return UserFormat(layout, kind, values=_values(x, opts), dtype=dtype)
    if kind == "discretized":
        if not integer:
            bins = _int_opt(opts, "num_bins")
            if bins is None:
                raise DataError("float data declared discretized need data.options.num_bins=K (values on the bin "
                                "centres (2k+1)/K - 1), or integer data")
            return UserFormat(layout, kind, num_bins=bins, dtype=dtype)
        low, high = _int_range(x, opts)
        bins = _int_opt(opts, "num_bins") or int(high - low + 1)
        if bins > MAX_BINS:
            raise DataError(f"{bins} bins are more than {MAX_BINS}; use data.options.kind=continuous for such data")
        if bins < 2:
            raise DataError(f"the data holds one value only ({low:.4g}); nothing to learn")
        return UserFormat(layout, kind, num_bins=bins, low=low, high=high, dtype=dtype)
    low_opt, high_opt = opts.get("low"), opts.get("high")
    if low_opt is None or high_opt is None:
        lo, hi = float(x.min()), float(x.max())
        if lo == hi:
            raise DataError(f"the data holds one value only ({lo:.4g}); nothing to learn")
        scaled = lo < -1 or hi > 1
        if scaled and layout == "ND" and x.shape[1] > 1:
            col_low, col_high = _column_ranges(x)
            return UserFormat(layout, "continuous", low=col_low, high=col_high, dtype=dtype)
        low_opt, high_opt = (lo, hi) if scaled else (None, None)
    return UserFormat(layout, "continuous", low=_range_value(low_opt), high=_range_value(high_opt), dtype=dtype)


def _column_ranges(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Each column's [min, max] (a constant column: its value +- 1), for continuous vectors [N, D]."""
    lo, hi = x.min(axis=0).astype(np.float64), x.max(axis=0).astype(np.float64)
    flat = lo == hi
    lo[flat], hi[flat] = lo[flat] - 1, hi[flat] + 1
    return [float(v) for v in lo], [float(v) for v in hi]


def _range_value(v: Any) -> float | list[float] | None:
    """A declared (or saved) low/high: None, a number, or one number per column."""
    if v is None:
        return None
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    try:
        return [float(e) for e in v]
    except (TypeError, ValueError):
        raise DataError(f"data.options.low/high must be numbers (or one per column), got {v!r}") from None


def check_numeric(x: np.ndarray) -> None:
    """A non-empty array of finite numbers (bool, integers or floats), or a one-line DataError."""
    if x.size == 0:
        raise DataError(f"the data array is empty (shape {x.shape}); give at least one example")
    if x.dtype.kind not in "biuf":
        raise DataError(f"the data has dtype {x.dtype}; give a numeric array (integers or floats)")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"the data holds {np.count_nonzero(~np.isfinite(x))} NaN or Inf values; remove or "
                        "replace them")


def _infer_kind(x: np.ndarray, layout: str, opts: dict[str, Any]) -> str:
    if "num_classes" in opts or "values" in opts:
        return "discrete"
    if "num_bins" in opts:
        return "discretized"
    if x.dtype.kind == "b":
        return "discrete"
    if x.dtype.kind == "f":
        return "continuous"
    distinct = np.unique(x)
    if distinct.size <= 2:
        return "discrete"
    if is_image_layout(layout):
        low, high = _int_range(x, opts)
        return "discretized" if high - low + 1 <= MAX_BINS else "continuous"
    return "discrete" if distinct.size <= MAX_CLASSES else "continuous"


def _values(x: np.ndarray, opts: dict[str, Any]) -> list[int]:
    if x.dtype.kind == "f":
        raise DataError(f"discrete data need integer class values, got {x.dtype}; cast with x.astype(np.int64) "
                        "or use data.options.kind=continuous")
    if "values" in opts:
        values = [int(v) for v in opts["values"]]
    elif "num_classes" in opts:
        k = _int_opt(opts, "num_classes") or 2
        lo = int(x.min())
        values = list(range(min(lo, 0), min(lo, 0) + k))
    else:
        values = [int(v) for v in np.unique(x)]
        if len(values) == 1:
            values = [values[0], values[0] + 1]  # one value seen: still a two-class problem
    if len(values) < 2:
        raise DataError("discrete data need at least 2 classes")
    return values


def _int_range(x: np.ndarray, opts: dict[str, Any]) -> tuple[int, int]:
    if opts.get("low") is not None and opts.get("high") is not None:
        return int(opts["low"]), int(opts["high"])
    lo, hi = int(x.min()), int(x.max())
    low = min(lo, 0)
    high = 255 if x.dtype == np.uint8 and hi > 127 else hi
    return low, high


def _int_opt(opts: dict[str, Any], key: str) -> int | None:
    v = opts.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 2:
        raise DataError(f"data.options.{key} must be an integer >= 2, got {v!r}")
    return v


# --- value maps ----------------------------------------------------------------------------------------------
def _class_indices(x: np.ndarray, values: list[int] | None) -> np.ndarray:
    vals = np.asarray(values, dtype=np.int64)
    xi = x.astype(np.int64)
    idx = np.clip(np.searchsorted(vals, xi), 0, len(vals) - 1)
    bad = vals[idx] != xi
    if bad.any():
        v = xi[bad].flat[0]
        raise DataError(f"the value {v} is not one of the {len(vals)} classes {vals[:8].tolist()}...; fix the data "
                        "or drop data.options.values/num_classes to infer them")
    return idx.astype(np.int64)


def _bin_centres(x: np.ndarray, num_bins: int, low: float | None, high: float | None) -> np.ndarray:
    centres = (2 * np.arange(num_bins) + 1) / num_bins - 1
    if low is None:  # floats that must sit on the bin centres
        if x.min() < -1 or x.max() > 1:
            raise DataError(f"discretized data given as floats must lie in [-1, 1], got [{x.min():.4g}, "
                            f"{x.max():.4g}]; give integer values instead")
        k = np.clip(np.floor((x.astype(np.float64) + 1) * num_bins / 2), 0, num_bins - 1).astype(np.int64)
        off = np.abs(x - centres[k]).max()
        if off > 1e-5:
            raise DataError(f"discretized values must sit on the centres (2k+1)/K - 1 of the {num_bins} bins; one "
                            f"is {off:.3g} away; give integer values instead")
        return centres[k].astype(np.float32)
    xi = x.astype(np.int64)
    lo, hi = int(low), int(high if high is not None else low)
    if xi.min() < lo or xi.max() > hi:
        bad = xi.min() if xi.min() < lo else xi.max()
        raise DataError(f"the value {bad} is outside the range {lo}..{hi} of data.options.low/high; fix the data or "
                        "drop the options to infer them")
    k = (xi - lo) * num_bins // (hi - lo + 1)
    return centres[k].astype(np.float32)


def _scale(x: np.ndarray, low: float | list[float] | None, high: float | list[float] | None) -> np.ndarray:
    """[low, high] -> [-1, 1]: one range, or one per column (the last axis)."""
    v = x.astype(np.float64)
    if low is not None and high is not None:
        lo, hi = np.asarray(low, np.float64), np.asarray(high, np.float64)
        if lo.ndim and (v.ndim != 2 or v.shape[-1] != lo.size):
            raise DataError(f"data.options.low/high give {lo.size} column ranges, but the data has shape "
                            f"{x.shape}; give one number each or one per column of (N, D) vectors")
        v = 2 * (v - lo) / (hi - lo) - 1
    return v.astype(np.float32)
