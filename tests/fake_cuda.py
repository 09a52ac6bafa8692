"""A fake CUDA device for CPU-only CI: real CPU arithmetic, tensors that say ``cuda``, and the
checks a real GPU makes.

``torch._subclasses.fake_tensor.FakeTensorMode`` holds no data, so every data-dependent op (a
``torch.equal`` deciding a fast path once per generation, a mask length) fails whether it runs once
or at every step, and no result can be compared with the CPU's. This harness wraps real CPU
tensors in ``FakeCudaTensor`` (``device`` reports ``cuda:0``) and, for every aten op, checks what a
CUDA build checks:

- tensors of one op are on one device, except CPU scalars (0-dim) and the ops that move data
  (``copy_``, ``_to_copy``) or take CPU indices (``index``, ``index_put_``);
- a ``generator`` is on the device the op draws on (a CPU ``torch.Generator`` given to a ``cuda``
  draw raises ``Expected a 'cuda' device type for generator``, as on a GPU);
- ``torch.Generator(device="cuda")`` cannot be made (no CUDA here, as on the CPU build).

With ``FakeCuda(no_float64=True)`` a float64 tensor on the device raises, as on MPS (which has
no float64): the Mac guard.

Host syncs (``.item()``, ``float(t)``, ``torch.equal``, ``nonzero``, ``tolist``, printing) on a
fake-CUDA tensor are recorded with the line that made them (``FakeCuda.syncs``); inside
``FakeCuda.no_syncs()`` they raise. ``tests/sa3/test_fake_cuda.py`` proves each check fails where
a GPU fails.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device("cuda", 0)
aten = torch.ops.aten

# ops that read tensor data back to the host (a device -> host sync on a real GPU)
SYNC_OPS = {aten._local_scalar_dense.default, aten.equal.default, aten.nonzero.default, aten.is_nonzero.default,
            aten.masked_select.default, aten._unique2.default, aten.unique_consecutive.default,
            aten.repeat_interleave.Tensor, aten.allclose.default, aten.unique_dim.default}
# ops whose tensor arguments may be on different devices (data moves, or CPU index tensors)
CROSS_DEVICE_OPS = {aten.copy_.default, aten._to_copy.default, aten.to.dtype_layout, aten.to.device,
                    aten.index.Tensor, aten.index_put_.default,
                    aten.index_put.default, aten._index_put_impl_.default, aten.set_.source_Tensor,
                    aten.lift_fresh.default, aten.lift_fresh_copy.default, aten.detach.default}


class DeviceMismatch(RuntimeError):
    """What CUDA raises for tensors on two devices in one op."""


class HostSync(RuntimeError):
    """A device -> host read where none is allowed."""


class NoFloat64(TypeError):
    """What MPS raises for a float64 tensor (it has no float64)."""


class FakeCudaTensor(torch.Tensor):
    """A CPU tensor (``elem``) that reports ``cuda:0``."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(
            cls, elem.shape, strides=elem.stride(), storage_offset=elem.storage_offset(), dtype=elem.dtype,
            layout=elem.layout, device=CUDA, requires_grad=elem.requires_grad)
        out.elem = elem
        return out

    def __repr__(self) -> str:
        return f"FakeCudaTensor(shape={tuple(self.shape)}, dtype={self.dtype})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})

    def __reduce_ex__(self, protocol):  # deep copies and pickles read the data
        return self.elem.__reduce_ex__(protocol)


def _device_of(t: torch.Tensor) -> torch.device:
    return CUDA if isinstance(t, FakeCudaTensor) else t.device


def _is_cuda(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


_STATE: list[FakeCuda] = []  # the active harness (one at a time)


def _run(func, args, kwargs):
    harness = _STATE[-1] if _STATE else None
    tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
    on_cuda = [t for t in tensors if isinstance(t, FakeCudaTensor)]
    wants_cuda = _is_cuda(kwargs.get("device"))
    if func is aten._has_compatible_shallow_copy_type.default:  # module.to(): swap .data only within a kind
        return isinstance(args[0], FakeCudaTensor) == isinstance(args[1], FakeCudaTensor) and func(
            *tree_map(_unwrap, args))
    if func not in CROSS_DEVICE_OPS and on_cuda:
        cpu = [t for t in tensors if not isinstance(t, FakeCudaTensor) and t.dim() > 0]
        if cpu:
            raise DeviceMismatch(f"Expected all tensors to be on the same device, but found at least two devices, "
                                 f"cuda:0 and cpu! ({func}, cpu shape {tuple(cpu[0].shape)})")
    generator = kwargs.get("generator")
    if generator is not None:
        target = "cuda" if (wants_cuda or on_cuda) else "cpu"
        if generator.device.type != target:
            raise RuntimeError(f"Expected a '{target}' device type for generator but found "
                               f"'{generator.device.type}' ({func})")
    if func in SYNC_OPS and on_cuda and harness is not None:
        harness.record_sync(func)
    if harness is not None and harness.no_float64:
        _check_float64(func, on_cuda, wants_cuda, kwargs)
    if func.overloadpacket in (aten._to_copy, aten.to) and _target_device(args, kwargs) is not None:
        return _move(func, args, kwargs, harness)
    if wants_cuda:
        kwargs = {**kwargs, "device": torch.device("cpu")}
    out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
    if not (on_cuda or wants_cuda) or func in SYNC_OPS:
        return out
    if func is aten.copy_.default and not isinstance(args[0], FakeCudaTensor):
        return args[0]  # cuda -> cpu copy into a CPU tensor
    inputs = {id(_unwrap(a)): a for a in tree_flatten(args)[0] if isinstance(a, FakeCudaTensor)}
    return tree_map(lambda o: _wrap(o, inputs), out)


def _wrap(out, inputs: dict):
    """An op's output as fake CUDA; an in-place op's output is its input wrapper itself."""
    if not isinstance(out, torch.Tensor):
        return out
    same = inputs.get(id(out))
    return same if same is not None else FakeCudaTensor(out)


def _target_device(args, kwargs) -> torch.device | None:
    """The device a ``to`` / ``_to_copy`` call moves to (keyword or positional), if any."""
    found = [a for a in (*args[1:], kwargs.get("device")) if isinstance(a, torch.device)]
    return found[0] if found else None


def _move(func, args, kwargs, harness):
    """A ``to`` / ``_to_copy`` across the two devices: run on the CPU, wrap when it goes to CUDA."""
    to_cuda = _target_device(args, kwargs).type == "cuda"
    cpu = torch.device("cpu")
    args = [cpu if isinstance(a, torch.device) else _unwrap(a) for a in args]
    kwargs = {k: cpu if isinstance(v, torch.device) else v for k, v in kwargs.items()}
    out = func(*args, **kwargs)
    if not to_cuda:
        return out
    if harness is not None and harness.no_float64 and out.dtype == torch.float64:
        raise NoFloat64(f"float64 moved to the device ({func} at {_caller()})")
    return FakeCudaTensor(out)


def _check_float64(func, on_cuda: list, wants_cuda: bool, kwargs: dict) -> None:
    """MPS: a float64 tensor on the device (an input, or a factory's dtype) is an error."""
    if any(t.dtype == torch.float64 for t in on_cuda) or (wants_cuda and kwargs.get("dtype") == torch.float64):
        raise NoFloat64(f"Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support "
                        f"float64 ({func} at {_caller()})")
    if func is aten._to_copy.default and on_cuda and kwargs.get("dtype") == torch.float64:
        raise NoFloat64(f"float64 on the device ({func} at {_caller()})")  # x.double() on the device


def _unwrap(a):
    return a.elem if isinstance(a, FakeCudaTensor) else a


class _FactoryMode(TorchDispatchMode):
    """Sends every op through ``_run``, so factories given ``device="cuda"`` make fake-CUDA tensors.
    It takes torch's FAKE mode slot, the one with which torch makes ``cuda`` tensors without
    initialising CUDA (as ``FakeTensorMode`` does)."""

    def __init__(self):
        super().__init__()
        self._mode_key = torch._C._TorchDispatchModeKey.FAKE

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


class FakeCuda:
    """The harness: ``with FakeCuda() as fc:`` makes ``cuda`` usable on this machine, records host
    syncs in ``fc.syncs`` (op, the first line of our code that made it)."""

    def __init__(self, no_float64: bool = False):
        self.syncs: list[tuple[str, str]] = []
        self.no_float64 = no_float64  # the MPS rule: no float64 tensor on the device
        self._forbid = 0
        self._stack = contextlib.ExitStack()

    def record_sync(self, func) -> None:
        where = _caller()
        if self._forbid:
            raise HostSync(f"host sync ({func}) on a CUDA tensor where none is allowed, at {where}")
        self.syncs.append((str(func), where))

    @contextlib.contextmanager
    def no_syncs(self) -> Iterator[None]:
        self._forbid += 1
        try:
            yield
        finally:
            self._forbid -= 1

    def __enter__(self) -> FakeCuda:
        _STATE.append(self)
        # torch.tensor(data, device="cuda") builds on the CPU and moves through the dispatcher
        # (FakeTensorMode's switch for the same reason)
        lift = torch._C._only_lift_cpu_tensors()
        torch._C._set_only_lift_cpu_tensors(True)
        self._stack.callback(torch._C._set_only_lift_cpu_tensors, lift)
        torch._C._ensureCUDADeviceGuardSet()  # a no-op CUDA device guard where CUDA is absent (as FakeTensorMode)
        self._stack.enter_context(_FactoryMode())
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        _STATE.remove(self)


def _caller() -> str:
    """The innermost frame of this repository's code outside this file."""
    for frame in reversed(traceback.extract_stack()):
        if ("/sa3/" in frame.filename or "/nodes/" in frame.filename) and "fake_cuda" not in frame.filename:
            return f"{frame.filename.rsplit('/', 2)[-2]}/{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"
    return "?"


def to_fake_cuda(module: torch.nn.Module) -> torch.nn.Module:
    """Every parameter and buffer of ``module`` onto the fake device, in place (sharing no storage
    with the CPU original: a copy, so the CPU model stays usable)."""
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                sub._parameters[name] = torch.nn.Parameter(FakeCudaTensor(p.detach().clone()),
                                                           requires_grad=p.requires_grad)
        for name, b in list(sub._buffers.items()):
            if b is not None:
                sub._buffers[name] = FakeCudaTensor(b.clone())
    return module


def move_model(model, device: torch.device | str = "cuda"):
    """A ``StableAudioModel`` (its four parts) onto the fake CUDA device, in place."""
    for part in (model.dit, model.conditioner, model.autoencoder, model.text_encoder):
        to_fake_cuda(part)
    model.device = torch.device(device)
    return model
