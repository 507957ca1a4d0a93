"""The model's state around a trace: what a forward may change, saved before and put back after.

This is the "no trace leaves a trace" promise of DESIGN.md: after :func:`trace` returns or
raises, the model is as it was: the same parameter, buffer and submodule objects in each
module, holding the same storage and values, the same training flags, and the same global
RNG state. :func:`seeded` is the fixture's side of it: the RNGs seeded for a test body and
restored after it.

Values are copied only when something is about to write them (:class:`WriteGuard`), found
by storage, so a write through ``.data``, a view, ``out=`` or ``copy_`` is caught as well as
a plain in-place op; a model holding a 500 MB buffer it never writes costs nothing extra.
What a forward rebinds (``self.x = self.x + 1``, a new ``nn.Parameter``, a new submodule, a
new buffer, ``p.data = ...``) is put back from the module tables saved up front, which hold
references, not copies.
"""

from __future__ import annotations

import ctypes
import random
import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from operator import attrgetter
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from .modules import ModuleTree

#: A module's tables a forward may rebind entries of: parameters, buffers, submodules.
_TABLES = (attrgetter("_parameters"), attrgetter("_buffers"), attrgetter("_modules"))
_TRAINING = attrgetter("training")
_DATA, _VERSION, _GRAD = attrgetter("data"), attrgetter("_version"), attrgetter("grad")
_SHAPE, _DTYPE, _LAYOUT = attrgetter("shape"), attrgetter("dtype"), attrgetter("layout")
_STORAGE_PTR = torch.UntypedStorage.data_ptr
_NON_PERSISTENT = attrgetter("_non_persistent_buffers_set")


def _storage_key(tensor: Tensor) -> int | None:
    """Which memory a tensor's values live in: shared by its views, ``.data`` and aliases."""
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, TypeError):  # sparse, nested and other storage-less layouts
        return None


class WriteGuard:
    """Copies a model tensor (parameter, buffer or input) the moment before the forward first writes it."""

    def __init__(self, tensors: list[Tensor]) -> None:
        try:  # torch's methods mapped over the tensors: no Python-level work per tensor
            keys: list[int | None] = list(map(_STORAGE_PTR, map(Tensor.untyped_storage, tensors)))
        except (RuntimeError, NotImplementedError, TypeError):  # a sparse or nested tensor among them
            keys = list(map(_storage_key, tensors))
        #: storage -> the tensors whose values live there
        self._owners: dict[int | None, tuple[Tensor, ...]] = dict(zip(keys, zip(tensors)))
        if len(self._owners) != len(keys):  # tensors sharing memory (tied weights, views)
            self._owners = {}
            for key, tensor in zip(keys, tensors):
                self._owners[key] = (*self._owners.get(key, ()), tensor)
        self._owners.pop(None, None)
        #: ``(tensor, copy of its values)`` by tensor id, for each tensor written so far.
        self.saved: dict[int, tuple[Tensor, Tensor]] = {}

    def before_write(self, target: Tensor) -> None:
        """Save what ``target``'s memory holds, if it is a model tensor's and not saved yet."""
        owners = self._owners.pop(_storage_key(target), None)  # type: ignore[arg-type]
        if owners:
            self.save(owners)

    def save(self, tensors: Iterable[Tensor]) -> None:
        with torch._C.DisableTorchFunction(), torch.no_grad():  # the tracer's own copies are no ops
            for tensor in tensors:
                if id(tensor) not in self.saved:
                    self.saved[id(tensor)] = (tensor, tensor.detach().clone())

    def restore(self) -> None:
        if not self.saved:
            return
        with torch._C.DisableTorchFunction(), torch.no_grad():
            for tensor, copy in self.saved.values():
                tensor.copy_(copy)


class ModelState:
    """What a forward pass may change and a trace must put back."""

    def __init__(
        self,
        tree: ModuleTree,
        inputs: Iterable[Tensor] = (),
        *,
        grad: bool = False,
        rng: RngState | None = None,
    ) -> None:
        modules = [m for _, m in tree.modules]
        self.modules = modules
        self.training = list(map(_TRAINING, modules))
        # Code the tracer cannot see into writes without telling: TorchScript modules are copied up
        # front. Their tables are C++'s: Python cannot rebind them.
        scripted = [m for m in modules if isinstance(m, torch.jit.ScriptModule)]
        plain = [m for m in modules if not isinstance(m, torch.jit.ScriptModule)] if scripted else modules
        # The tables themselves (references): a forward that rebinds an entry is undone by these.
        # The ids tell, in one comparison per table, whether any entry was rebound (the saved
        # objects are held, so no new object can take one of their ids). Most tables are empty
        # (a leaf module has no submodules, most modules no buffers): those are only checked
        # to be empty still, all of a kind at once.
        self.empty: list[tuple[Callable[[nn.Module], Any], list[nn.Module]]] = []
        self.filled: list[tuple[nn.Module, Callable[[nn.Module], Any], dict[str, Any], list[int]]] = []
        for get in _TABLES:
            empty = []
            for m, table in zip(plain, map(get, plain)):
                if table:
                    self.filled.append((m, get, dict(table), list(map(id, table.values()))))
                else:
                    empty.append(m)
            self.empty.append((get, empty))
        self.non_persistent = [
            (m, set(m._non_persistent_buffers_set)) for m in plain if m._non_persistent_buffers_set
        ]
        self.all_persistent = [m for m in plain if not m._non_persistent_buffers_set]
        # A lazy module's first forward makes its parameters: that change is expected.
        tensors = [t for _, t in (*tree.params, *tree.buffers)]
        if any(map(is_lazy, tensors)):
            tensors = [t for t in tensors if not is_lazy(t)]
        # What follows is read with torch's own getters mapped over the tensors (C loops): on a
        # model of a hundred tensors, Python-level work per tensor is most of a trace's fixed cost.
        self.tensors = tensors
        # `p.data = other` keeps the object and swaps its memory: an alias keeps the old memory.
        self.aliases = list(map(_DATA, tensors))
        self.places = _places(tensors)
        self.versions = list(map(_VERSION, tensors))
        self.params = [p for _, p in tree.params]
        self.grads = list(map(_GRAD, self.params))
        self.grad_ids = list(map(id, self.grads))
        # With autograd on, the forward may accumulate into the gradients themselves: their values too.
        self.grad_values = [None if g is None else g.clone() for g in self.grads] if grad else None
        self.guard = WriteGuard([*tensors, *inputs])
        if scripted:
            self.guard.save(t for m in scripted for t in (*m.parameters(), *m.buffers()))
        # The RNG states as they were before the trace: a warm-up and the traced forward put back
        # the same ones, read once (NumPy's state alone costs tens of microseconds each way).
        self.rng = rng if rng is not None else RngState()

    def restore(self) -> None:
        for get, empty in self.empty:
            if any(map(get, empty)):  # an entry added to a table that had none
                for table in map(get, empty):
                    table.clear()
        for module, get, entries, ids in self.filled:
            table = get(module)
            if list(map(id, table.values())) != ids or table.keys() != entries.keys():
                table.clear()
                table.update(entries)
        if any(map(_NON_PERSISTENT, self.all_persistent)):
            for module in self.all_persistent:
                if module._non_persistent_buffers_set:
                    module._non_persistent_buffers_set = set()
        for module, names in self.non_persistent:
            if module._non_persistent_buffers_set != names:
                module._non_persistent_buffers_set = set(names)
        if self.places is None or _places(self.tensors) != self.places:  # some `.data` may be rebound
            moved = [(t, alias) for t, alias in zip(self.tensors, self.aliases) if _moved(t, alias)]
            if moved:
                with torch._C.DisableTorchFunction(), torch.no_grad():
                    for tensor, alias in moved:
                        tensor.data = alias
        self.guard.restore()
        if list(map(id, map(_GRAD, self.params))) != self.grad_ids:
            for param, grad in zip(self.params, self.grads):
                if param.grad is not grad:
                    param.grad = grad
        if self.grad_values is not None:
            for grad, values in zip(self.grads, self.grad_values):
                if grad is not None and values is not None:
                    grad.copy_(values)
        if list(map(_TRAINING, self.modules)) != self.training:
            for module, training in zip(self.modules, self.training):
                if module.training is not training:  # nn.Module.__setattr__ is slow: skip the no-ops
                    module.training = training
        self.rng.restore()

    def written_parameters(self) -> list[Tensor]:
        """Parameters whose values the forward changed (call it before :meth:`restore`)."""
        saved = self.guard.saved
        with torch._C.DisableTorchFunction():
            return [
                p for p in self.params
                if id(p) in saved and not p.is_meta and not torch.equal(p.detach(), saved[id(p)][1])
            ]  # fmt: skip

    def unrestorable(self) -> list[Tensor]:
        """Model tensors changed in place by code the tracer could not see into (native kernels)."""
        if list(map(_VERSION, self.tensors)) == self.versions:
            return []
        saved = self.guard.saved
        return [
            t
            for t, version in zip(self.tensors, self.versions)
            if t._version != version and id(t) not in saved
        ]


def _places(tensors: list[Tensor]) -> tuple[list[Any], ...] | None:
    """Where and how each tensor's values lie, to compare in one go; None where some have no pointer."""
    try:
        return (
            list(map(Tensor.data_ptr, tensors)),
            list(map(Tensor.stride, tensors)),
            list(map(_SHAPE, tensors)),
            list(map(_DTYPE, tensors)),
            list(map(_LAYOUT, tensors)),
        )
    except (RuntimeError, NotImplementedError, TypeError):  # sparse or nested: compared one by one
        return None


def _moved(tensor: Tensor, alias: Tensor) -> bool:
    """Whether ``tensor`` no longer holds the memory ``alias`` holds (``tensor.data = ...``).

    Sparse, nested and meta tensors have no data pointer to compare: for them only a change
    of dtype, shape or layout shows.
    """
    if tensor.dtype != alias.dtype or tensor.shape != alias.shape or tensor.layout != alias.layout:
        return True
    if tensor.is_meta or tensor.layout is not torch.strided or tensor.is_nested:
        return False
    return tensor.data_ptr() != alias.data_ptr() or tensor.stride() != alias.stride()


class RngState:
    """torch's (CPU and every initialised CUDA device), NumPy's and Python's global RNG states."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = (
            torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else None
        )
        self.python = _PythonState()
        self.numpy = _NumpyState.now()

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        self.python.restore()
        if self.numpy is not None:
            self.numpy.restore()


class _PythonState:
    """Python's global ``random`` generator state, read raw and put back only where it changed.

    Why not plain ``random.getstate``/``setstate`` each time: they turn the 624 state words
    into a tuple of Python ints and back, about 10 us and 5 us, on every trace of a model that
    never draws from ``random``. CPython's generator keeps its position and words in one block
    right after the object header; :func:`_python_words_address` proves that layout on this
    interpreter (against ``getstate``) before it is relied on, and where it does not hold the
    full state is read and put back as before. The rest of the state, the cached Gaussian of
    ``random.gauss``, is an attribute, compared by identity.
    """

    __slots__ = ("address", "gauss", "generator", "raw", "state")

    def __init__(self) -> None:
        generator = self.generator = _python_generator()
        self.gauss = getattr(generator, "gauss_next", None)
        self.address = _python_words_address(generator)
        self.raw: bytes | None
        self.state: tuple[Any, ...] | None
        if self.address is None:
            self.raw, self.state = None, generator.getstate()
        else:
            self.raw, self.state = ctypes.string_at(self.address, _MT19937_BYTES), None

    def restore(self) -> None:
        generator = self.generator  # the one read, whatever `random` draws from now
        if self.state is not None:  # read in full
            generator.setstate(self.state)
            return
        if self.raw is None or self.address is None:  # not reached: one or the other was read
            return
        now = ctypes.string_at(self.address, _MT19937_BYTES)
        if now == self.raw and getattr(generator, "gauss_next", None) is self.gauss:
            return
        generator.setstate((_PYTHON_STATE_VERSION, _python_internal(self.raw), self.gauss))


#: The words of an MT19937 generator (Python's and NumPy's legacy one).
_MT19937_WORDS = 624
#: Its words and position as CPython's ``random`` keeps them: an int, then the 624 uint32.
_PYTHON_STATE_VERSION = 3
#: Where the position and the words of a ``random.Random`` lie, by generator class: checked once.
_python_layouts: dict[type, int | None] = {}


def _python_generator() -> random.Random:
    """The generator the ``random`` module's functions draw from (they are its bound methods)."""
    generator: random.Random = getattr(random.getstate, "__self__")  # noqa: B009 - typed here
    return generator


def _python_words_address(generator: random.Random) -> int | None:
    """The address of ``generator``'s position and words, where this interpreter's layout is proven."""
    kind = type(generator)
    if kind not in _python_layouts:
        _python_layouts[kind] = _python_words_offset(generator)
    offset = _python_layouts[kind]
    return None if offset is None else id(generator) + offset


def _python_words_offset(generator: random.Random) -> int | None:
    """The offset of the words in a generator, if ``getstate`` says they lie there (else None)."""
    if not isinstance(generator, random.Random) or sys.implementation.name != "cpython":
        return None
    try:
        version, internal, _ = generator.getstate()
    except (TypeError, ValueError):
        return None
    if version != _PYTHON_STATE_VERSION or len(internal) != _MT19937_WORDS + 1:
        return None
    offset = object.__basicsize__  # right after the object header (refcount and type)
    raw = ctypes.string_at(id(generator) + offset, _MT19937_BYTES)
    return offset if _python_internal(raw) == internal else None


def _python_internal(raw: bytes) -> tuple[int, ...]:
    """The generator's words and position as ``getstate`` gives them, from the raw block."""
    position = int.from_bytes(raw[:4], sys.byteorder, signed=True)
    return (*struct.unpack(f"={_MT19937_WORDS}I", raw[4:]), position)


#: The MT19937 words and position behind NumPy's global generator: 624 uint32 and an int.
_MT19937_BYTES = _MT19937_WORDS * 4 + 4


class _NumpyState:
    """NumPy's global (legacy) generator state, read and put back only where it changed.

    Why not plain ``get_state``/``set_state`` each time: they copy the 624 state words one
    by one in Python-level code, about 30 us each way, more than the whole forward of a
    small model, on every trace of a model that never touches NumPy. The raw words (read
    through the bit generator's documented ``ctypes`` interface, under a microsecond) tell
    whether the state is the one read last time, and after the forward whether anything
    drew from it. The one part of the state outside those words, a cached Gaussian of the
    legacy ``normal`` sampler, can only be there after a draw changed the words: while the
    last full read says there is none, equal words mean an equal state; while there is one,
    every trace reads and puts back the full state.
    """

    #: ``(raw words, full state)`` of the last full read, shared by every trace.
    _last: tuple[bytes, Any] | None = None

    def __init__(self, generator: Any, address: int | None, raw: bytes | None, state: Any) -> None:
        self.generator = generator
        self.address = address
        self.raw = raw
        self.state = state

    @classmethod
    def now(cls) -> _NumpyState | None:
        numpy = _numpy_random()
        if numpy is None:
            return None
        generator = numpy.mtrand._rand
        address = cls._address(generator)
        if address is None:  # another bit generator (``set_bit_generator``): the full state
            return cls(generator, None, None, generator.get_state(legacy=False))
        raw = ctypes.string_at(address, _MT19937_BYTES)
        last = cls._last
        if last is not None and last[0] == raw and not last[1]["has_gauss"]:
            return cls(generator, address, raw, last[1])
        state = generator.get_state(legacy=False)
        cls._last = (raw, state)
        return cls(generator, address, raw, state)

    @staticmethod
    def _address(generator: Any) -> int | None:
        bits = generator._bit_generator
        if type(bits).__name__ != "MT19937":
            return None
        return int(bits.ctypes.state_address)

    def restore(self) -> None:
        unchanged = (
            self.address is not None
            and not self.state["has_gauss"]
            and self._address(self.generator) == self.address  # the same bit generator
            and ctypes.string_at(self.address, _MT19937_BYTES) == self.raw
        )
        if not unchanged:
            self.generator.set_state(self.state)


def _numpy_random() -> Any:
    try:
        import numpy
    except ImportError:  # torch runs without NumPy
        return None
    return numpy.random


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's, NumPy's and Python's global RNGs seeded with ``seed`` inside, restored after."""
    numpy = _numpy_random()
    python, numpy_state = random.getstate(), numpy.get_state() if numpy is not None else None
    with torch.random.fork_rng():  # CPU and every CUDA device
        try:
            torch.manual_seed(seed)
            random.seed(seed)
            if numpy is not None:
                numpy.seed(seed % 2**32)  # NumPy's global seed is 32-bit
            yield
        finally:
            random.setstate(python)
            if numpy is not None:
                numpy.set_state(numpy_state)


def grad_mode(*, grad: bool) -> Any:
    """The autograd mode a forward runs in: off unless the forward itself differentiates."""
    return torch.enable_grad() if grad else torch.no_grad()
