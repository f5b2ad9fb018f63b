"""What the trainers do: the autoencoder's stages and the DiT's flow matching."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from dinosae.config.base import ConfigError, check_at_least, check_fields
from dinosae.config.recipes import stage_rules, stages

# The fields whose default is the stage's (the default recipe's stage files: dinosae/config/recipes/dino-sae).
STAGE_RULE_FIELDS = ("lr", "gan_weight", "train_stem", "latent_noise")
# How a run continues from a checkpoint in its folder: None starts a new run (refusing a folder that has
# checkpoints), "latest" continues from the newest complete one, "auto" continues if there is one and starts
# otherwise (one command for a job's first start and every requeue).
RESUME_MODES = (None, "latest", "auto")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "bf16", "fp32")  # auto: bf16 autocast on CUDA, float32 on the CPU
SAMPLING_PRECISIONS = ("auto", "bf16", "tf32", "fp32")  # tf32: float32 with TF32 matmuls
NOISES = ("tangent", "gaussian")
NOISE_DRAWS = ("sample", "batch")
CROPS = ("center", "random")  # the autoencoder's crop of each image: the centre, or placed at random


def _check_counts(config: AETrainConfig | DiTTrainConfig) -> None:
    """Run lengths and cadences are at least 1 (a cadence of 0 would divide by zero after a step)."""
    check_at_least(config, 1, "steps", "batch_size", "log_every", "ckpt_every", "keep_last", "grad_accum",
                   "phema_update_every")
    check_at_least(config, 0, "num_workers", "phema_every")
    widest = math.sqrt(1 / 12)  # the uniform average, the limit of the power profiles
    if not config.phema_sigma_rels or not all(1e-3 <= s < widest for s in config.phema_sigma_rels) \
            or len(set(config.phema_sigma_rels)) != len(config.phema_sigma_rels):
        raise ConfigError(f"phema_sigma_rels must be distinct widths in [0.001, {widest:.4f}), got "
                          f"{list(config.phema_sigma_rels)}")
    if config.batch_size % config.grad_accum:
        raise ConfigError(f"batch_size {config.batch_size} is not a multiple of grad_accum {config.grad_accum}")


@dataclass(frozen=True)
class AETrainConfig:
    """What ``dinosae train ae`` does; ``None`` fields take their stage's default.

    Defaults follow the official release where it states them (learning rates
    per stage, batch 256, alignment 0.5, LPIPS 1.0, adversarial 0.5) and common
    practice elsewhere (AdamW, clipping at 1, EMA 0.9999), since the release
    publishes no training code. The stage's defaults of ``lr``, ``gan_weight``,
    ``train_stem`` and ``latent_noise`` are the stage rules: the default
    recipe's stage files (``dinosae.config.recipes``).

    The learning rate warms up linearly over ``warmup_steps`` (every stage
    starts a fresh AdamW, whose first steps move every weight by about lr
    whatever its gradient), then stays (``"constant"``) or decays along a
    cosine to ``lr * lr_min_ratio`` (``"cosine"``); it is a function of the
    step, so a resumed run follows it exactly. The generator's adversarial term
    starts at ``gan_start``, scaled by the adaptive weight (a ratio of gradient
    norms, at most ``gan_max_weight``) unless ``gan_adaptive`` is off; the
    discriminator trains from ``disc_start`` (default: ``gan_start``).
    ``train_stem`` is on in stages 1 and 2, ``latent_noise`` in stage 4.
    Latent noise (see ``dinosae.train.autoencoder.noise_decoder_input``) is
    ``noise`` of size up to ``noise_max``: an angle for ``"tangent"``, a
    standard deviation for ``"gaussian"``; with ``noise_ramp_steps`` the bound
    moves linearly from ``noise_max_start`` to ``noise_max`` over those steps
    (the HAE paper's 0.8 -> 1.2). ``grad_checkpoint`` recomputes the decoder's
    stages and LPIPS's VGG in the backward pass instead of storing them.

    Augmentation: each image's shorter side is resized to ``resize`` (default
    the model's image size), then cropped to a square at the centre or, with
    ``crop="random"``, at a random place (RAE's stage 1: resize 384, random crop
    256); ``flip`` mirrors half of the images. Both are drawn from the batch
    order, so that a resumed run sees the same pixels.

    ``batch_size`` is the global batch; ``grad_accum`` splits each rank's share
    into that many micro-batches whose gradients add up before the one
    optimizer step (memory of one micro-batch, the result of the whole batch).
    ``ema_warmup`` ramps the EMA decay as ``min(decay, (1 + n) / (10 + n))``
    over the first updates (see ``dinosae.train.ema.EMA``), which a stage
    started from another stage's weights needs; ``tf32`` lets CUDA matmuls and
    convolutions use TF32.

    Post-hoc EMA (``dinosae.train.phema``): the run tracks a power-function
    average of the trainable weights for each width in ``phema_sigma_rels``
    (EDM2's 0.05 and 0.10), sampling every ``phema_update_every``-th step, and
    saves them every ``phema_every`` steps and at the end (0: none tracked), for
    ``dinosae ema`` to choose a length later.

    Example:
        >>> config = AETrainConfig(stage=2)
        >>> config.lr, config.gan_weight, config.train_stem, config.latent_noise
        (0.0001, 0.5, True, False)
        >>> AETrainConfig(stage=4, noise_max_start=0.2, noise_max=0.6, noise_ramp_steps=4).noise_bound(2)
        0.4
    """

    stage: int = 1
    steps: int = 10_000
    batch_size: int = 256
    lr: float | None = None
    disc_lr: float | None = None
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    lr_min_ratio: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    phema_sigma_rels: tuple[float, ...] = (0.05, 0.10)
    phema_every: int = 2000
    phema_update_every: int = 4
    align: str = "cosine"
    align_weight: float = 0.5
    l1_weight: float = 1.0
    lpips_weight: float = 1.0
    gan_weight: float | None = None
    gan_adaptive: bool = True
    gan_max_weight: float = 1e4
    gan_start: int = 0
    disc_start: int | None = None
    train_stem: bool | None = None
    latent_noise: bool | None = None
    noise: str = "tangent"
    noise_max: float = 0.5
    noise_max_start: float | None = None
    noise_ramp_steps: int = 0
    noise_per: str = "sample"
    flip: bool = True
    crop: str = "center"
    resize: int | None = None
    seed: int = 0
    log_every: int = 10
    image_every: int = 500
    ckpt_every: int = 1000
    keep_last: int = 2
    num_workers: int = 4
    compile: bool = False
    grad_checkpoint: bool = False
    grad_accum: int = 1
    tf32: bool = True

    # Settings of the machine, not of the run: a resume follows the new value without comparing it.
    RUNTIME: ClassVar[tuple[str, ...]] = ("log_every", "image_every", "ckpt_every", "keep_last", "num_workers",
                                          "compile", "grad_checkpoint", "grad_accum", "tf32", "phema_every")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.stage not in stages():
            raise ValueError(f"stage must be one of {stages()}, got {self.stage}")
        rules = stage_rules(self.stage)
        for name in STAGE_RULE_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, rules[name])
        if self.disc_lr is None:
            object.__setattr__(self, "disc_lr", self.lr)
        if self.disc_start is None:
            object.__setattr__(self, "disc_start", self.gan_start)
        check_fields(self)  # the stage rules too
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {self.noise!r}")
        if self.noise_per not in NOISE_DRAWS:
            raise ValueError(f"noise_per must be one of {NOISE_DRAWS}, got {self.noise_per!r}")
        if self.noise_max < 0 or self.noise_ramp_steps < 0:
            raise ValueError(f"noise_max and noise_ramp_steps must be >= 0, got {self.noise_max} and "
                             f"{self.noise_ramp_steps}")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        _check_counts(self)
        check_at_least(self, 1, "image_every")
        check_at_least(self, 0, "warmup_steps", "gan_start", "disc_start")

    def schedule_depends_on_steps(self) -> bool:
        """Whether the learning rate of a step depends on the run's length (a cosine decays to its end)."""
        return self.lr_schedule == "cosine"

    def lr_at(self, step: int, base: float | None = None) -> float:
        """The learning rate of (0-based) ``step`` for a base rate (default ``lr``).

        Example:
            >>> config = AETrainConfig(steps=10, lr=1.0, warmup_steps=2, lr_schedule="cosine")
            >>> [round(config.lr_at(s), 3) for s in (0, 1, 2, 9)]
            [0.5, 1.0, 1.0, 0.038]
        """
        base = self.lr if base is None else base
        if step < self.warmup_steps:
            return base * (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return base
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps))
        return base * (self.lr_min_ratio + (1.0 - self.lr_min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def noise_bound(self, step: int) -> float:
        """The bound of the latent noise at ``step`` (0 when the run adds none)."""
        if not self.latent_noise:
            return 0.0
        if self.noise_ramp_steps == 0 or self.noise_max_start is None:
            return self.noise_max
        progress = min(1.0, step / self.noise_ramp_steps)
        return self.noise_max_start + progress * (self.noise_max - self.noise_max_start)


@dataclass(frozen=True)
class DiTTrainConfig:
    """What ``dinosae train dit`` does.

    The geometry and the prediction are the model's (``DiTConfig.manifold``,
    ``prediction`` and ``radius``). ``shift=None`` takes the dimension-dependent shift ``sqrt(N * D / 4096)``;
    ``shift=1`` turns shifting off. ``radial_weight`` weighs the part of
    an unprojected velocity that leaves the sphere (``dinosae.flow.loss``; the
    HAE paper's 0.1). ``precision`` is the autocast of the forward pass (``PRECISIONS``).
    ``grad_checkpoint`` recomputes each DiT block in the backward pass;
    ``grad_accum``, ``ema_warmup`` (off, as in DiT: a constant decay),
    ``tf32`` and the post-hoc EMA fields (``phema_*``) are
    as for ``AETrainConfig``.

    Example:
        >>> DiTTrainConfig(shift=3.0).shift
        3.0
    """

    steps: int = 400_000
    batch_size: int = 256
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    ema_warmup: bool = False
    phema_sigma_rels: tuple[float, ...] = (0.05, 0.10)
    phema_every: int = 20_000
    phema_update_every: int = 4
    time_sampler: str = "logit-normal"
    shift: float | None = None
    radial_weight: float = 1.0
    precision: str = "auto"
    flip: bool = True
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 5000
    keep_last: int = 2
    num_workers: int = 4
    compile: bool = False
    grad_checkpoint: bool = False
    grad_accum: int = 1
    tf32: bool = True

    RUNTIME: ClassVar[tuple[str, ...]] = ("log_every", "ckpt_every", "keep_last", "num_workers", "compile",
                                          "grad_checkpoint", "grad_accum", "tf32", "phema_every")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.radial_weight >= 0:
            raise ValueError(f"radial_weight must be >= 0, got {self.radial_weight}")
        _check_counts(self)

    def schedule_depends_on_steps(self) -> bool:
        return False  # a constant learning rate


@dataclass(frozen=True)
class DistillConfig:
    """What ``dinosae distill`` does: a student DiT that samples in ``nfe`` Euler steps.

    The teacher integrates ``couplings`` trajectories from seeded noise with
    ``teacher_steps`` steps of ``teacher_method`` (guided by ``cfg``), keeping
    the states at the student's time grid (``nfe`` steps, the teacher's
    sampling shift unless ``shift``). The student starts from the teacher's
    weights and learns, at each grid state, the velocity whose exp-map step
    lands on the teacher's next state, ``log_x(x_next) / h`` (reflow on the
    teacher's couplings, with every jump a geodesic). Optimizer, EMA, cadences
    and post-hoc EMA are as for ``DiTTrainConfig``.

    Example:
        >>> DistillConfig(nfe=2).teacher_steps
        64
    """

    nfe: int = 2
    steps: int = 20_000
    batch_size: int = 256
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    phema_sigma_rels: tuple[float, ...] = (0.05, 0.10)
    phema_every: int = 0
    phema_update_every: int = 4
    couplings: int = 65_536
    teacher_steps: int = 64
    teacher_method: str = "midpoint"
    cfg: float = 1.0
    shift: float | None = None
    precision: str = "auto"
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 1000
    keep_last: int = 2
    num_workers: int = 0
    grad_accum: int = 1
    tf32: bool = True

    RUNTIME: ClassVar[tuple[str, ...]] = ("log_every", "ckpt_every", "keep_last", "num_workers", "tf32",
                                          "phema_every", "steps")
    NFES: ClassVar[tuple[int, ...]] = (1, 2, 4)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.nfe not in self.NFES:
            raise ConfigError(f"nfe must be one of {self.NFES}, got {self.nfe}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.teacher_method not in ("euler", "heun", "midpoint"):
            raise ConfigError(f"teacher_method must be euler, heun or midpoint, got {self.teacher_method!r}")
        _check_counts(self)
        check_at_least(self, self.nfe, "teacher_steps")
        check_at_least(self, 1, "couplings")
        if self.shift is not None and not self.shift > 0:
            raise ConfigError(f"shift must be > 0, got {self.shift}")
