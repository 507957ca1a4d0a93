"""How the tracer writes torch values down: op names, tensor specs, arguments, statistics.

Everything here turns a live torch object into plain, JSON-safe, deterministic data:
no memory addresses, no devices, floats rounded, so the same model gives the same text
on every run and every device.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .. import ids
from ..errors import TraceError
from ..trace import DTYPE_SIZES, Layout, Stats, TensorSpec

#: Lists and tuples longer than this are written as ``<list of N>`` in node arguments.
MAX_LISTED_ARGS = 16
#: Significant digits kept of float arguments (``eps=1e-05``), so they print stably.
ARG_FLOAT_DIGITS = 8
#: How deep the tensors inside plain objects among the inputs and outputs are looked
#: for (a Hugging Face cache holds its tensors two objects down).
MAX_OBJECT_DEPTH = 4

_DUNDER_INPLACE = {"iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow",
                   "imatmul", "iand", "ior", "ixor", "ilshift", "irshift"}  # fmt: skip
#: Device types: a string argument naming one (``x.to("cuda")``) is written ``<device>``.
_DEVICE_TYPES = frozenset({"cpu", "cuda", "mps", "xpu", "meta", "hpu", "xla", "npu", "mtia", "ipu"})

#: Op names by intercepted callable, filled by :func:`op_name`; the recorder's handler reads it first.
OP_NAMES: dict[Any, str] = {}
_dtype_names: dict[torch.dtype, str] = {}


def op_name(func: Any) -> str:
    """The function-level name of an intercepted callable, cached per callable."""
    try:
        return OP_NAMES[func]
    except (KeyError, TypeError):
        pass
    name = getattr(func, "__name__", None) or type(func).__name__
    if name == "__get__":  # a Tensor property such as `.T` or `.real`
        name = getattr(getattr(func, "__self__", None), "__name__", "get")
    if name.startswith("__") and name.endswith("__") and len(name) > 4:
        name = name[2:-2]
        if name in _DUNDER_INPLACE:
            name = name[1:] + "_"
    name = name.removesuffix(".default")  # torch.ops.aten.add.default
    try:
        OP_NAMES[func] = name
    except TypeError:
        pass
    return name


def dtype_name(dtype: torch.dtype) -> str:
    name = _dtype_names.get(dtype)
    if name is None:
        name = _dtype_names[dtype] = str(dtype).removeprefix("torch.")
        DTYPE_SIZES.setdefault(name, dtype.itemsize)  # a dtype newer than the table
    return name


#: TensorSpecs of dense tensors by (dtype, shape): a forward makes few distinct ones, and
#: looking one up costs a fraction of building the frozen dataclass again for every output.
_specs: dict[tuple[torch.dtype, tuple[int, ...]], TensorSpec] = {}
MAX_CACHED_SPECS = 4096
_STRIDED = torch.strided
#: Layouts other than dense by torch's, for the specs of tensors that are not dense.
_LAYOUTS = {
    torch.sparse_coo: Layout.SPARSE_COO,
    torch.sparse_csr: Layout.SPARSE_CSR,
    torch.sparse_csc: Layout.SPARSE_CSC,
    torch.sparse_bsr: Layout.SPARSE_BSR,
    torch.sparse_bsc: Layout.SPARSE_BSC,
    torch._mkldnn: Layout.MKLDNN,  # type: ignore[attr-defined]
    torch.jagged: Layout.JAGGED,
}


def spec_of(tensor: Tensor) -> TensorSpec:
    try:
        shape = tensor.shape
    except (RuntimeError, TypeError):  # a strided nested tensor has no plain shape
        return _nested_spec(tensor, Layout.NESTED)
    layout = tensor.layout
    if layout is not _STRIDED:
        return _laid_out_spec(tensor, layout)
    key = (tensor.dtype, shape)  # torch.Size is a tuple, so it hashes
    try:
        return _specs[key]
    except KeyError:
        spec = TensorSpec(dtype_name(tensor.dtype), tuple(shape))
        if len(_specs) < MAX_CACHED_SPECS:
            _specs[key] = spec
        return spec
    except TypeError:  # symbolic sizes do not hash
        return TensorSpec(dtype_name(tensor.dtype), tuple(shape))


def _laid_out_spec(tensor: Tensor, layout: torch.layout) -> TensorSpec:
    """The spec of a sparse, MKL-DNN or jagged tensor: its layout written after the shape."""
    known = _LAYOUTS.get(layout)
    if known is None:
        raise TraceError(
            f"a tensor of dtype {dtype_name(tensor.dtype)} has the layout {layout}, which pytest-modellens "
            "does not know; convert it with .to_dense() before it leaves the model, or trace another input"
        )
    if known.nested:
        return _nested_spec(tensor, known)
    return TensorSpec(dtype_name(tensor.dtype), tuple(tensor.shape), known)


def _nested_spec(tensor: Tensor, layout: Layout) -> TensorSpec:
    """A nested tensor's spec: its component count, then each size, ragged (None) where components differ.

    Read from the components, not from ``tensor.shape``: a jagged tensor's ragged size is a
    symbol numbered per process (``j1``, ``j7``), which a snapshot cannot hold.
    """
    sizes = [tuple(component.shape) for component in tensor.unbind()]
    if not sizes:  # no component to read a size from
        return TensorSpec(dtype_name(tensor.dtype), (0, *[None] * (tensor.dim() - 1)), layout)
    inner = tuple(dim[0] if len(set(dim)) == 1 else None for dim in zip(*sizes))
    return TensorSpec(dtype_name(tensor.dtype), (len(sizes), *inner), layout)


#: Float arguments already rounded: a forward passes the same few (``eps``, ``p``) again and again.
_floats: dict[float, float | str] = {}


def describe_float(value: float) -> float | str:
    """A float argument rounded to :data:`ARG_FLOAT_DIGITS` significant digits (``nan``, ``inf`` as text)."""
    try:
        return _floats[value]
    except KeyError:
        pass
    found: float | str = float(f"{value:.{ARG_FLOAT_DIGITS}g}") if math.isfinite(value) else str(value)
    # Not NaN (never found again) nor zero (0.0 and -0.0 are one key but two texts).
    if len(_floats) < MAX_CACHED_SPECS and value and not math.isnan(value):
        _floats[value] = found
    return found


def describe(value: Any) -> Any:
    """A JSON-safe, device-free, deterministic description of a non-tensor argument."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return "<device>" if value.split(":", 1)[0] in _DEVICE_TYPES else value  # "cuda:0"
    if isinstance(value, float):
        return describe_float(value)
    if isinstance(value, Tensor):
        return "<tensor>"
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_LISTED_ARGS:
            return f"<{type(value).__name__} of {len(value)}>"
        return [describe(item) for item in value]
    if isinstance(value, slice):
        parts = (value.start, value.stop) if value.step is None else (value.start, value.stop, value.step)
        return ":".join("" if p is None else str(describe(p)) for p in parts)
    if value is Ellipsis:
        return "..."
    if isinstance(value, torch.dtype):
        return dtype_name(value)
    if isinstance(value, torch.device):
        return "<device>"  # devices stay out of the compared data
    if isinstance(value, (torch.memory_format, torch.layout)):
        return str(value).removeprefix("torch.")
    if isinstance(value, Mapping):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, numbers.Integral):  # numpy and other foreign scalars
        return int(value)
    if isinstance(value, numbers.Real):
        return describe(float(value))
    return f"<{type(value).__name__}>"  # never repr(): it may hold an address or a device


_SPARSE = frozenset(
    {torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc}
)
#: Above this many elements, a view that repeats its values (``expand``) has its statistics
#: taken on one copy of them rather than on a float64 copy of every element. Below it the
#: copy is cheap, and its sums are those of the same values held densely, to the last bit.
COMPACT_ABOVE = 1 << 22


def compute_stats(tensor: Tensor, *, node_id: str = "") -> Stats:
    """Statistics of a tensor's finite values, computed in float64, or a TraceError naming ``node_id``.

    Each kind of tensor is summarised by the values it stands for: a quantized one by its
    dequantized values, a sparse one by its dense values (never made dense), a nested one by
    the elements of its components, an expanded view by the values it repeats. What still
    cannot be summarised (a view whose float64 copy would not fit in memory) is refused with
    the node it belongs to and the way out, never torch's own error.
    """
    try:
        return _stats(tensor.detach())
    except (RuntimeError, NotImplementedError, MemoryError) as error:
        subject = repr(node_id) if node_id else "a tensor"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TraceError(
            f"statistics of {subject} ({spec_of(tensor)}) could not be taken: {reason}; "
            "trace it with stats=False (or without --lens-stats), or have the model make a smaller tensor there"
        ) from error


def _stats(values: Tensor) -> Stats:
    """Statistics of a detached tensor.

    Most tensors are dense and hold no NaN or Inf, and their minimum and maximum prove it: one
    ``aminmax`` pass, the moments of one float64 copy, one ``tolist`` for all four off
    the CPU (one device sync, not four). Only a tensor whose extremes are not finite takes the
    masked path. Both give the same numbers: the same reductions of the same float64
    values; the extremes of a float tensor are exact in float64.
    """
    numel = values.numel()
    if numel == 0 or values.is_meta:
        return Stats(None, None, None, None, 0, 0)
    if values.layout is not _STRIDED or values.is_quantized or values.is_nested:
        return _stats_of_values(values)
    if numel > COMPACT_ABOVE and 0 in values.stride():
        return _repeated_stats(values)
    if values.is_complex():
        values = values.abs()
    wide = values.to(torch.float64)
    # Native floats: the extremes in their own dtype (half the bytes to read); anything
    # else (ints beyond 2**53, bools) from the float64 copy, as the masked path reads them.
    low, high = torch.aminmax(values if values.is_floating_point() else wide)
    moments = (wide.mean(), wide.std(correction=0))
    if values.device.type == "cpu":  # reading a CPU scalar costs no sync: skip the stack
        mean, std, low_value, high_value = (*(m.item() for m in moments), low.item(), high.item())
    else:
        mean, std, low_value, high_value = torch.stack(
            [*moments, low.to(torch.float64), high.to(torch.float64)]
        ).tolist()
    if math.isfinite(low_value) and math.isfinite(high_value):
        return Stats(mean, std, low_value, high_value, 0, 0)
    return _masked_stats(wide)


def _stats_of_values(values: Tensor) -> Stats:
    """Statistics of a tensor that is not plain dense, taken on the values it stands for."""
    if values.is_quantized:
        return _stats(values.dequantize())
    if values.is_nested:
        return _stats(torch.cat([component.flatten() for component in values.unbind()]))
    if values.layout in _SPARSE:
        return _sparse_stats(values)
    return _stats(values.to_dense())  # MKL-DNN: dense values in another memory format


def _sparse_stats(values: Tensor) -> Stats:
    """Statistics of a sparse tensor's dense values: its stored values and the zeros it leaves out.

    Never made dense (a 10**6 x 10**6 matrix would take 4 TB). Coalescing first sums the
    entries an uncoalesced COO tensor stores twice, as its dense form does.
    """
    stored = values.to_sparse_coo().coalesce().values()
    found = _stats(stored)
    finite = stored.numel() - found.nan - found.inf
    return _with_zeros(found, finite=finite, zeros=values.numel() - stored.numel())


def _with_zeros(found: Stats, *, finite: int, zeros: int) -> Stats:
    """``found`` (the statistics of ``finite`` finite values) with ``zeros`` more values of 0.0.

    The zeros are a second group of mean 0 and no spread, joined by Chan's pairwise update:
    stable where the mean is large beside the spread, as the dense two-pass one is.
    """
    if zeros == 0:
        return found
    if found.mean is None or found.std is None or found.min is None or found.max is None:
        return Stats(0.0, 0.0, 0.0, 0.0, found.nan, found.inf)
    total = finite + zeros
    mean = found.mean * (finite / total)
    squares = found.std**2 * finite + found.mean**2 * (finite * zeros / total)
    std = math.sqrt(squares / total)
    return Stats(mean, std, min(found.min, 0.0), max(found.max, 0.0), found.nan, found.inf)


def _repeated_stats(values: Tensor) -> Stats:
    """Statistics of a view that repeats its values (stride-0 dims, from ``expand``), on one copy of them.

    Every value is repeated equally often, so the mean, spread and extremes are those of
    one copy; the NaN and Inf counts are that many times those of one copy.
    """
    once = values[tuple(0 if stride == 0 else slice(None) for stride in values.stride())]
    found = _stats(once)
    times = values.numel() // once.numel()
    return dataclasses.replace(found, nan=found.nan * times, inf=found.inf * times)


def _masked_stats(values: Tensor) -> Stats:
    """Statistics of the finite values of a float64 tensor that may hold NaN or Inf."""
    finite = torch.isfinite(values)
    nan = int(torch.isnan(values).sum())
    finite_count = int(finite.sum())
    inf = values.numel() - finite_count - nan
    if finite_count == 0:
        return Stats(None, None, None, None, nan, inf)
    if finite_count < values.numel():
        values = values[finite]
    return Stats(
        values.mean().item(),
        values.std(correction=0).item(),
        values.min().item(),
        values.max().item(),
        nan,
        inf,
    )


def tensors_in(values: Any, out: list[Tensor]) -> list[Tensor]:
    """The tensors in nested lists, tuples and dicts, in order (the handler's quick walk)."""
    for value in values:
        if isinstance(value, Tensor):
            out.append(value)
        elif isinstance(value, (list, tuple)):
            tensors_in(value, out)
        elif isinstance(value, dict):
            tensors_in(value.values(), out)
    return out


def flatten(value: Any, path: str, out: list[tuple[str, Tensor]], depth: int = 0) -> Any:
    """Collect the tensors of a nested value with their paths; return its description.

    Handles tensors, tuples and lists (named tuples by field), mappings (Hugging Face
    ``ModelOutput`` is one), dataclasses and, a few levels deep, the public attributes
    of plain objects that hold tensors (a Hugging Face cache). Paths join keys with
    dots: ``0.1``, ``logits``, ``past_key_values.layers.0.keys``.
    """
    join = (lambda key: f"{path}.{key}") if path else str
    if isinstance(value, Tensor):
        out.append((path, value))
        return str(spec_of(value))
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {f: flatten(v, join(f), out, depth) for f, v in zip(value._fields, value)}
    if isinstance(value, (list, tuple)):
        return [flatten(v, join(i), out, depth) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        described: dict[str, Any] = {}
        for k, v in value.items():
            key = ids.distinct(str(k), described)  # {1: a, "1": b} keeps both
            described[key] = flatten(v, join(key), out, depth)
        return described
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: flatten(getattr(value, f.name), join(f.name), out, depth)
            for f in dataclasses.fields(value)
        }
    attributes = getattr(value, "__dict__", None)
    if attributes and depth < MAX_OBJECT_DEPTH and not isinstance(value, (nn.Module, type)):
        held = {}
        for name, item in attributes.items():
            found: list[tuple[str, Tensor]] = []
            if not name.startswith("_"):
                description = flatten(item, join(name), found, depth + 1)
                if found:  # only what holds tensors: the rest is the object's bookkeeping
                    held[name] = description
                    out.extend(found)
        if held:
            return held
    return describe(value)
