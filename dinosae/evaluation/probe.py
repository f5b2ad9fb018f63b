"""``dinosae eval probe``: the paper's semantic-preservation check, as linear probes.

A logistic-regression probe on mean-pooled latent tokens is compared with the
same probe on the mean-pooled tokens of the frozen teacher (DINOv3 through its
own patch embedding). The teacher's accuracy is the ceiling the spherical latent
should stay close to: the paper reports 89% (teacher) against 87% (latent) on
ImageNet-1K. Labels are the class sub-folders of an ImageFolder tree.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

import sphere_ops
from dinosae.data.images import DataError, FolderBatches, ImageDataset
from dinosae.metrics import linear_probe
from dinosae.models.autoencoder import SphericalAutoencoder

# Names of held-out split folders next to ``train/``, in order of preference.
HELDOUT_NAMES = ("heldout", "val", "test")
# The probe plot's regularization sweep (the headline number uses ``weight_decay``).
SWEEP_WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass
class ProbeFeatures:
    """Mean-pooled features of a labelled folder: ``latent`` and ``teacher`` (M, D), ``labels`` (M,).

    Per image (M,), from the same pass: ``cosine``, the mean cosine similarity of
    its student tokens to its teacher tokens (what the alignment loss trains), and
    ``norm_ratio``, the mean ratio of their norms (what only an MSE alignment
    constrains; the spherical latent discards it).
    """

    latent: torch.Tensor
    teacher: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    cosine: torch.Tensor
    norm_ratio: torch.Tensor


def resolve_splits(data_dir: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(train, heldout)`` folders of ``data_dir``; ``heldout`` is ``None`` when there is no split.

    A root holding ``train/`` and one of ``heldout/``, ``val/`` or ``test/``, each
    with class sub-folders (the layout ``dinosae.data.photos`` writes), is a split
    dataset; anything else is one ImageFolder tree. Without this, a split root
    would be read as a two-class dataset whose classes are "train" and "heldout".

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for split in ("train", "val"):
        ...     (root / split / "cat").mkdir(parents=True)
        >>> [p.name for p in resolve_splits(root)]
        ['train', 'val']
    """
    root = Path(data_dir)
    train = root / "train"
    if _has_subfolders(train):
        for name in HELDOUT_NAMES:
            if _has_subfolders(root / name):
                return train, root / name
    return root, None


def _has_subfolders(path: Path) -> bool:
    return path.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())


@torch.no_grad()
def probe_features(model: SphericalAutoencoder, data_dir: str | os.PathLike, *, batch_size: int = 64,
                   max_per_class: int | None = None, num_workers: int = 0, progress: bool = False) -> ProbeFeatures:
    """Mean-pooled unit latent tokens and mean-pooled teacher tokens of every image, with its class.

    The latent feature is the mean of the (B, N, D) unit tokens (what
    ``model.encode`` returns), the teacher feature the mean of
    ``model.encoder.teacher_tokens`` (the ViT's final-norm tokens, as a DINO
    probe reads them). ``max_per_class`` keeps the first images of each class,
    for a quick probe of a large dataset. Unreadable images are skipped with a
    warning.

    Example:
        >>> from dinosae.models.loading import load_model
        >>> model = load_model("runs/ae", kind="autoencoder")  # doctest: +SKIP
        >>> features = probe_features(model, "data/photos/train")  # doctest: +SKIP
        >>> features.latent.shape, len(features.classes)  # doctest: +SKIP
        (torch.Size([256, 192]), 8)
    """
    dataset = ImageDataset(data_dir, model.config.image_size, dtype=torch.uint8)
    if len(dataset.classes) < 2:
        layout = "a flat folder has no labels" if not dataset.classes else "it has one class"
        raise DataError(f"a probe needs an ImageFolder tree with at least 2 class sub-folders in "
                        f"{str(data_dir)!r}; {layout}")
    indices = _first_per_class(dataset.labels, max_per_class)
    batches = FolderBatches(dataset, indices, batch_size, num_workers, progress, desc="probe features")
    device = next(model.parameters()).device
    columns: dict[str, list[torch.Tensor]] = {k: [] for k in ("latent", "teacher", "labels", "cosine", "norm_ratio")}
    for batch in batches:
        images = batch.pixels(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            student = model.encoder.student_tokens(images).float()
            teacher = model.encoder.teacher_tokens(images).float()
        # The encoder's latent is exactly this projection of its student tokens.
        columns["latent"].append(sphere_ops.normalize(student).mean(dim=1).cpu())
        columns["teacher"].append(teacher.mean(dim=1).cpu())
        columns["labels"].append(batch.labels)
        columns["cosine"].append(F.cosine_similarity(student, teacher, dim=-1).mean(dim=1).cpu())
        columns["norm_ratio"].append((student.norm(dim=-1) / teacher.norm(dim=-1)).mean(dim=1).cpu())
    if not columns["labels"]:
        raise DataError(f"no readable images in {str(data_dir)!r}")
    joined = {name: torch.cat(parts) for name, parts in columns.items()}
    return ProbeFeatures(classes=list(dataset.classes), **joined)


def _first_per_class(labels: Sequence[int], limit: int | None) -> list[int]:
    if limit is None:
        return list(range(len(labels)))
    seen: dict[int, int] = {}
    kept = []
    for index, label in enumerate(labels):
        if seen.get(label, 0) < limit:
            seen[label] = seen.get(label, 0) + 1
            kept.append(index)
    return kept


def stratified_split(labels: torch.Tensor, test_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test indices with ``test_fraction`` of every class in the test part (at least one image,
    and at least one left for training, where the class has two or more).

    Example:
        >>> train, test = stratified_split(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), 0.25)
        >>> len(train), len(test), sorted(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])[test].tolist())
        (6, 2, [0, 1])
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"the test fraction must lie in (0, 1), got {test_fraction}")
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for label in labels.unique().tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = min(max(round(test_fraction * len(members)), 1), len(members) - 1)
        test.append(members[:count])
        train.append(members[count:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def _subset(features: ProbeFeatures, indices: torch.Tensor) -> ProbeFeatures:
    return ProbeFeatures(features.latent[indices], features.teacher[indices], features.labels[indices],
                         features.classes, features.cosine[indices], features.norm_ratio[indices])


def split_features(model: SphericalAutoencoder, train_dir: str | os.PathLike,
                   test: str | os.PathLike | float = 0.25, *, seed: int = 0, max_per_class: int | None = None,
                   **feature_options) -> tuple[ProbeFeatures, ProbeFeatures]:
    """Probe features of a training folder and of a test folder (or of a stratified ``test`` fraction).

    ``max_per_class`` truncates the training folder only (before a fractional
    split): a test folder is always read whole, so that test accuracies of
    different runs compare.
    """
    train = probe_features(model, train_dir, max_per_class=max_per_class, **feature_options)
    if isinstance(test, float):
        train_idx, test_idx = stratified_split(train.labels, test, seed)
        if len(test_idx) == 0:
            raise DataError(f"{str(train_dir)!r} has too few images per class to hold some out for testing")
        return _subset(train, train_idx), _subset(train, test_idx)
    held = probe_features(model, test, **feature_options)
    if held.classes != train.classes:
        raise DataError(f"the test folder's classes {held.classes[:5]} differ from the training folder's "
                        f"{train.classes[:5]}; both need the same class sub-folders")
    return train, held


def fit_probes(train: ProbeFeatures, test: ProbeFeatures, weight_decay: float = 1e-4,
               max_iter: int = 1000) -> dict[str, float]:
    """Test accuracy of the latent probe and of the teacher probe, with the same regularization.

    Example:
        >>> labels = torch.arange(40) % 2
        >>> feats = torch.randn(40, 3, generator=torch.Generator().manual_seed(0)) + 6 * labels[:, None]
        >>> part = ProbeFeatures(feats, feats, labels, ["a", "b"], torch.ones(40), torch.ones(40))
        >>> fit_probes(part, part)["probe_latent"]
        1.0
    """
    return {"probe_latent": linear_probe(train.latent, train.labels, test.latent, test.labels,
                                         weight_decay=weight_decay, max_iter=max_iter),
            "probe_teacher": linear_probe(train.teacher, train.labels, test.teacher, test.labels,
                                          weight_decay=weight_decay, max_iter=max_iter)}


def probe_accuracy(model: SphericalAutoencoder, train_dir: str | os.PathLike,
                   test: str | os.PathLike | float = 0.25, *, weight_decay: float = 1e-4, max_iter: int = 1000,
                   seed: int = 0, **feature_options) -> dict[str, float | int]:
    """Latent probe against teacher probe: ``{"probe_latent", "probe_teacher", "probe_gap", "classes", ...}``.

    ``test`` is a held-out ImageFolder tree with the same classes, or the
    fraction of each class of ``train_dir`` to hold out (drawn with ``seed``).
    ``probe_gap`` is teacher minus latent accuracy: what the spherical latent
    loses of the teacher's linear separability. Both probes are
    ``dinosae.metrics.linear_probe`` (L-BFGS logistic regression on standardized
    features, ``weight_decay`` as its L2 strength). ``feature_options`` go to
    ``probe_features``.

    Example:
        >>> from dinosae.models.loading import load_model
        >>> model = load_model("runs/ae", kind="autoencoder")  # doctest: +SKIP
        >>> probe_accuracy(model, "data/photos/train", "data/photos/heldout")  # doctest: +SKIP
        {'probe_latent': 0.96875, 'probe_teacher': 1.0, 'probe_gap': 0.03125, 'classes': 8, ...}
    """
    train, held = split_features(model, train_dir, test, seed=seed, **feature_options)
    return probe_summary(train, held, weight_decay, max_iter)


def probe_summary(train: ProbeFeatures, held: ProbeFeatures, weight_decay: float = 1e-4, max_iter: int = 1000,
                  accuracies: dict[str, float] | None = None) -> dict[str, float | int]:
    """``fit_probes`` plus the gap, the sizes, and the test images' ``teacher_cosine`` and ``norm_ratio``.

    ``accuracies``: ``fit_probes``'s result for these settings when it is already at hand.
    """
    result: dict[str, float | int] = dict(accuracies or fit_probes(train, held, weight_decay, max_iter))
    result.update(probe_gap=result["probe_teacher"] - result["probe_latent"], classes=len(train.classes),
                  train_images=len(train.labels), test_images=len(held.labels),
                  latent_dim=int(train.latent.shape[1]), weight_decay=weight_decay,
                  teacher_cosine=float(held.cosine.mean()), norm_ratio=float(held.norm_ratio.mean()))
    return result


def probe_sweep(train: ProbeFeatures, test: ProbeFeatures,
                weight_decays: Sequence[float] = SWEEP_WEIGHT_DECAYS, max_iter: int = 1000) -> dict[str, list[float]]:
    """Both probes' accuracies over a range of L2 strengths: is the gap a property of the features,
    or of one regularization setting?"""
    fits = [fit_probes(train, test, wd, max_iter) for wd in weight_decays]
    return {"weight_decay": list(weight_decays), "probe_latent": [f["probe_latent"] for f in fits],
            "probe_teacher": [f["probe_teacher"] for f in fits]}


def evaluate_probe(ckpt: str | os.PathLike, data_dir: str | os.PathLike, out: str | os.PathLike | None, *,
                   test: str | os.PathLike | None = None, test_fraction: float = 0.25,
                   teacher_weights: str | os.PathLike | None = None,
                   device: str | None = None, weight_decay: float = 1e-4,
                   sweep: Sequence[float] = SWEEP_WEIGHT_DECAYS, max_iter: int = 1000, seed: int = 0,
                   **feature_options) -> dict:
    """Load ``ckpt``, probe ``data_dir``; with ``out``, write ``metrics.json`` and ``probe.png``.

    The probes test on ``test`` (a folder) when given, else on the held-out
    split of a split root (``train/`` + ``heldout/``, see ``resolve_splits``),
    else on a stratified ``test_fraction`` of ``data_dir``. The plot shows both
    probes over the L2 strengths of ``sweep`` and ``weight_decay``.

    Example:
        >>> evaluate_probe("runs/ae", "data/photos", "runs/ae/analysis/probe")  # doctest: +SKIP
    """
    from dinosae.evaluation.plots import line_plot
    from dinosae.io.atomic import write_json
    from dinosae.models.loading import load_model
    from dinosae.runtime import pick_device

    if min(*sweep, weight_decay) <= 0:
        raise ValueError(f"probe weight decays must be positive (the plot's axis is logarithmic), "
                         f"got {weight_decay} and sweep {list(sweep)}")
    train_dir, heldout = resolve_splits(data_dir)
    if test is None:
        test = heldout if heldout is not None else test_fraction
    model = load_model(ckpt, kind="autoencoder", teacher_weights=teacher_weights, device=pick_device(device))
    train, held = split_features(model, train_dir, test, seed=seed, **feature_options)
    curve = probe_sweep(train, held, sorted({*sweep, weight_decay}), max_iter)
    at = curve["weight_decay"].index(weight_decay)
    headline = {name: curve[name][at] for name in ("probe_latent", "probe_teacher")}
    result: dict = dict(probe_summary(train, held, weight_decay, max_iter, headline), train=str(train_dir),
                        test=str(test), sweep=curve)
    if out is not None:
        out = Path(out)
        log_wd = [math.log10(w) for w in curve["weight_decay"]]
        line_plot(out / "probe.png", {"latent (mean-pooled unit tokens)": (log_wd, curve["probe_latent"]),
                                      "teacher (mean-pooled DINO tokens)": (log_wd, curve["probe_teacher"])},
                  title=f"linear probe, {result['classes']} classes", xlabel="log10 L2 weight decay",
                  ylabel="test accuracy")
        write_json(out / "metrics.json", result)
    return result
