"""Counting memory without a GPU: bytes saved for the backward pass, by module, and live tensor bytes.

Both count storages, not tensors: views of one storage (a chunk of a qkv
projection, a transpose) are one allocation. ``fake_modules`` turns a model
built on the meta device into one of fake CPU tensors (``FakeTensorMode``):
every op then runs for its shapes and dtypes only, so the forward pass of a
ViT-L autoencoder at 256 px costs about a second and no memory, while
autocast and autograd save exactly what they save on real CPU tensors.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import defaultdict
from collections.abc import Iterator

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

OTHER = "other"


def storage_key(tensor: torch.Tensor) -> int:
    """An identity of the tensor's storage (the same for every view of it, real or fake).

    Example:
        >>> x = torch.zeros(4)
        >>> storage_key(x[:2]) == storage_key(x), storage_key(x) == storage_key(x.clone())
        (True, False)
    """
    return tensor.untyped_storage()._cdata


def fake_modules(modules: list[nn.Module], mode: FakeTensorMode) -> None:
    """Replace the parameters and buffers of ``modules`` (meta or real) by fake CPU tensors of ``mode``.

    Example:
        >>> with torch.device("meta"):
        ...     layer = nn.Linear(3, 2)
        >>> mode = FakeTensorMode()
        >>> fake_modules([layer], mode)
        >>> with mode:
        ...     out = layer(torch.ones(5, 3))
        >>> out.shape, out.device
        (torch.Size([5, 2]), device(type='cpu'))
    """
    cpu = torch.device("cpu")

    def fake(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.is_meta:
            return mode.fake_tensor_converter.from_meta_and_device(mode, tensor, cpu)
        return mode.from_tensor(tensor)

    for module in modules:
        for child in module.modules():
            for name, param in child._parameters.items():
                if param is not None:
                    child._parameters[name] = nn.Parameter(fake(param.data), requires_grad=param.requires_grad)
            for name, buffer in child._buffers.items():
                if buffer is not None:
                    child._buffers[name] = fake(buffer)


def module_storages(modules: list[nn.Module]) -> set[int]:
    """The storage keys of every parameter and buffer of ``modules``."""
    return {storage_key(t) for m in modules for t in (*m.parameters(), *m.buffers())}


class Labels:
    """Which labelled module the code is in: the outermost one, so that a frozen ViT run inside the
    discriminator counts as the discriminator's.

    ``label(module, name)`` labels a module's calls; ``label_method`` a bound method's (the
    teacher, which is a method of the encoder). ``remove()`` takes the hooks away.

    Example:
        >>> labels = Labels()
        >>> outer = nn.Sequential(nn.Linear(2, 2))
        >>> seen = []
        >>> labels.label(outer, "outer"); labels.label(outer[0], "inner")
        >>> _ = outer[0].register_forward_hook(lambda *_: seen.append(labels.current))
        >>> _ = outer(torch.ones(1, 2)); seen, labels.current
        (['outer'], 'other')
    """

    def __init__(self) -> None:
        self._stack: list[str] = []
        self._handles: list = []

    @property
    def current(self) -> str:
        return self._stack[0] if self._stack else OTHER

    def label(self, module: nn.Module, name: str) -> None:
        self._handles.append(module.register_forward_pre_hook(lambda *_: self._stack.append(name)))
        self._handles.append(module.register_forward_hook(lambda *_: self._pop()))

    def _pop(self) -> None:
        self._stack.pop()

    @contextlib.contextmanager
    def within(self, name: str) -> Iterator[None]:
        self._stack.append(name)
        try:
            yield
        finally:
            self._stack.pop()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages that ops create while the mode is on, alive now and at most.

    ``baseline`` counts storages that already exist (weights, optimizer state).
    A storage counts from the op that creates it until it is freed, so
    ``peak`` is what an allocator without caching or fragmentation would need.
    ``creator`` maps each storage to the label that was current when it was made.

    Example:
        >>> with LiveBytes() as live:
        ...     a = torch.ones(1024)
        ...     b = a * 2
        ...     del b
        >>> live.now, live.peak
        (4096, 8192)
    """

    def __init__(self, baseline: int = 0, labels: Labels | None = None) -> None:
        super().__init__()
        self.now = self.peak = baseline
        self.labels = labels
        self.creator: dict[int, str] = {}
        self._sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.now -= self._sizes.pop(key)
        self.creator.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage._cdata
                if key not in self._sizes and storage.nbytes():
                    self._sizes[key] = storage.nbytes()
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                    if self.labels is not None:
                        self.creator[key] = self.labels.current
                    weakref.finalize(storage, self._free, key)
        return out


class SavedBytes:
    """Bytes that autograd saves for the backward pass while this is entered, by label.

    Each storage counts once, under the label current when it was first saved
    (or, outside every labelled module, under the label of the module that
    made it, from ``live``: a checkpointed block's input is its producer's).
    Storages in ``exclude`` (weights, counted as such) are left out.

    Example:
        >>> w = nn.Parameter(torch.randn(8, 8))
        >>> with SavedBytes(exclude={storage_key(w)}) as saved:
        ...     y = (torch.randn(4, 8) @ w).relu()
        >>> dict(saved.by_label)  # matmul's input, relu's output; not the weight
        {'other': 256}
    """

    def __init__(self, labels: Labels | None = None, exclude: set[int] = frozenset(),
                 live: LiveBytes | None = None) -> None:
        self.labels, self.exclude, self.live = labels, exclude, live
        self.by_label: dict[str, int] = defaultdict(int)
        self._seen: set[int] = set()
        self._hooks: torch.autograd.graph.saved_tensors_hooks | None = None

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in self._seen and key not in self.exclude:
            self._seen.add(key)
            # A graph that is dropped unused frees what it saved before the step ends, and the next
            # storage may get the same address: it is a new allocation and must count.
            weakref.finalize(storage, self._seen.discard, key)
            label = self.labels.current if self.labels is not None else OTHER
            if label == OTHER and self.live is not None:
                label = self.live.creator.get(key, OTHER)
            self.by_label[label] += storage.nbytes()
        return tensor

    @property
    def total(self) -> int:
        return sum(self.by_label.values())

    def start(self) -> None:
        """Count from here (the same as entering)."""
        if self._hooks is None:
            self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
            self._hooks.__enter__()

    def stop(self) -> None:
        """Stop counting; stopping twice is harmless."""
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None

    def __enter__(self) -> "SavedBytes":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
