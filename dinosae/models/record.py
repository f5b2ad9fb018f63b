"""What every model file holds, read into one record: the model's kind, config, weights and teacher.

A reader per format (``dinosae.models.loading``: a run or one of its
checkpoints, ``dinosae.models.folder``: an exported folder, ``dinosae.models.official``:
an official release file) returns a :class:`ModelRecord`; the model classes'
``from_record`` build from it, so that the rules of loading (which weights, in
which dtype, where the frozen ViT comes from) are written once, whatever the
file was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dinosae.io.checkpoint import CheckpointError

AUTOENCODER, DIT = "autoencoder", "dit"
KINDS = (AUTOENCODER, DIT)
# The autoencoder's frozen ViT, in its weights.
VIT_PREFIX = "encoder.vit."


@dataclass(frozen=True)
class Teacher:
    """Where an autoencoder's frozen ViT comes from, as its file records it.

    ``file`` is the teacher-weights file that holds the ViT when the weights do
    not; ``origin`` the file the ViT's weights came from (None: a random ViT);
    ``missing`` why the teacher cannot run when its patch embedding was never
    loaded (an official release replaced it by the stem).

    Example:
        >>> Teacher().random(vit_in_weights=True), Teacher(origin="dinov3.pth").random(vit_in_weights=True)
        (True, False)
    """

    file: str | None = None
    origin: str | None = None
    missing: str | None = None

    def random(self, vit_in_weights: bool) -> bool:
        """Whether the ViT is randomly initialized: carried by the weights, from no file, and whole."""
        return vit_in_weights and self.origin is None and self.missing is None


@dataclass(frozen=True)
class ModelRecord:
    """A model as a file holds it, before any network is built.

    ``weights`` are the model's own, in this toolkit's names (a run's EMA
    averages already in place where asked for); ``vit`` is an official
    release's ViT in its own names, converted where the ViT is built; ``parts``
    are modules saved beside the model (a run's discriminator heads, under
    their name); ``meta`` is what the format records beside the weights (a
    run's ``meta.json``, a folder's ``config.json``). ``path`` is the file or
    directory read (a run's latest checkpoint, resolved), ``source`` what
    messages name. ``released`` is true for an exported folder or an official
    file: a model without the training run that made it.

    Example:
        >>> from dinosae.config import DiTConfig
        >>> record = ModelRecord("dit", DiTConfig(hidden_size=32, depth=1, num_heads=2, in_dim=8, grid_size=2), {},
        ...                      source="run")
        >>> record.vit_in_weights, record.released
        (False, False)
    """

    kind: str
    config: Any
    weights: dict[str, torch.Tensor]
    source: str
    path: Path | None = None
    teacher: Teacher = field(default_factory=Teacher)
    vit: dict[str, torch.Tensor] | None = None
    parts: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    released: bool = False

    @property
    def vit_in_weights(self) -> bool:
        """Whether the record carries the autoencoder's ViT (in its weights, or in an official release's names)."""
        return bool(self.vit) or any(key.startswith(VIT_PREFIX) for key in self.weights)


def saved_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint holds of ``module``: its ``weights_to_save()`` where it has one (the autoencoder
    leaves out a ViT that a teacher file provides), else its state dict."""
    save = getattr(module, "weights_to_save", None)
    return save() if save is not None else module.state_dict()


def load_weights(module: nn.Module, weights: dict[str, torch.Tensor], source: str,
                 optional: tuple[str, ...] = (), *, assign: bool = False) -> None:
    """Load ``weights`` into ``module``: every key it saves must be there (but those under ``optional``
    prefixes), and no other; a ``CheckpointError`` naming ``source`` otherwise. ``assign`` keeps each given
    tensor as it is (its dtype included) instead of copying it into the module's."""
    expected = set(saved_weights(module))
    try:
        missing, unexpected = module.load_state_dict(weights, strict=False, assign=assign)
    except RuntimeError as failure:  # shapes that do not fit
        raise CheckpointError(f"{source} does not fit this model: {str(failure).splitlines()[-1].strip()}") from failure
    missing = [k for k in missing if k in expected and not k.startswith(optional)]
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def named(kind: str) -> str:
    """``"an autoencoder"`` or ``"a DiT"``, for messages.

    Example:
        >>> named("dit")
        'a DiT'
    """
    return {AUTOENCODER: "an autoencoder", DIT: "a DiT"}.get(kind, repr(kind))


def check_fits(probe: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Refuse ``weights`` that ``probe`` (the model their config asks for, built on the meta device, so that
    nothing is allocated) has no place for, or a place of another shape: a config that does not match its
    weights (a hand edit, a hostile folder asking for a model of terabytes) is one line, before the model
    is built for real.

    Example:
        >>> check_fits(nn.Linear(2, 3, device="meta"), {"weight": torch.ones(3, 4)}, "a.safetensors")
        Traceback (most recent call last):
        ...
        dinosae.io.checkpoint.CheckpointError: a.safetensors does not fit its config: weight is (3, 4) in the file, (3, 2) in the model
    """
    expected = probe.state_dict()
    for name, tensor in weights.items():
        if name not in expected:
            raise CheckpointError(f"{source} does not fit its config: the model has no weight {name!r}")
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{source} does not fit its config: {name} is {tuple(tensor.shape)} in the file, "
                                  f"{tuple(expected[name].shape)} in the model")


def load_record_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str,
                        optional: tuple[str, ...] = ()) -> None:
    """Load ``weights`` into ``model`` bit for bit, in the dtypes they were saved in: every key the model
    saves (an autoencoder given a teacher file does not save its ViT), but those under ``optional``
    prefixes (loaded apart), and no other.

    Weights of one floating dtype turn the whole model into it, non-persistent buffers included (they
    enter the outputs); mixed dtypes are kept tensor by tensor.
    """
    dtypes = {t.dtype for t in weights.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtype=next(iter(dtypes)))
    load_weights(model, weights, source, optional, assign=len(dtypes) > 1)
