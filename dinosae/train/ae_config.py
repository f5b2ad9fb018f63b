"""Training settings for the autoencoder's four stages."""

from __future__ import annotations

from dataclasses import dataclass

# The official release's README: stage -> learning rate (batch 256).
STAGE_LR = {1: 1e-5, 2: 1e-4, 3: 1e-4, 4: 5.4e-5}
STAGES = {
    1: "stem + decoder: cosine alignment + L1 + LPIPS",
    2: "stem + decoder: + adversarial loss (DINO discriminator)",
    3: "decoder only, encoder frozen",
    4: "decoder only, latents noised in the tangent space",
}


@dataclass
class AETrainConfig:
    """What ``dinosae train ae`` does; ``None`` fields take their stage's default.

    Defaults follow the official release where it states them (learning rates
    per stage, batch 256, alignment 0.5, LPIPS 1.0, adversarial 0.5) and common
    practice elsewhere (AdamW, clipping at 1, EMA 0.9999), since the release
    publishes no training code.
    """

    stage: int = 1
    steps: int = 10_000
    batch_size: int = 256
    lr: float | None = None
    disc_lr: float | None = None
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    align: str = "cosine"
    align_weight: float = 0.5
    l1_weight: float = 1.0
    lpips_weight: float = 1.0
    gan_weight: float | None = None
    gan_start: int = 0
    noise_max: float = 0.5
    seed: int = 0
    log_every: int = 10
    image_every: int = 500
    ckpt_every: int = 1000
    keep_last: int = 2
    num_workers: int = 4
    compile: bool = False

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {sorted(STAGES)}, got {self.stage}")
        if self.lr is None:
            self.lr = STAGE_LR[self.stage]
        if self.disc_lr is None:
            self.disc_lr = self.lr
        if self.gan_weight is None:
            self.gan_weight = 0.0 if self.stage == 1 else 0.5
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch size must be positive, got {self.steps} and {self.batch_size}")

    @property
    def trains_stem(self) -> bool:
        return self.stage in (1, 2)
