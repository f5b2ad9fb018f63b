"""Run by ``torchrun`` from ``test_train_ae.py``: one DDP step of stage 1 on a slice of a global batch.

Rank 0 saves the synchronized gradients, which must equal a single process's
gradients on the whole batch.
"""

import os
import sys
import warnings

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from dinosae.config import AE_PRESETS, AETrainConfig, preset  # noqa: E402
from dinosae.models.autoencoder import SphericalAutoencoder  # noqa: E402
from dinosae.runtime import init_distributed, shutdown  # noqa: E402
from dinosae.train.autoencoder import TrainForward, generator_losses, set_trainable  # noqa: E402

GLOBAL_BATCH = 4


def build() -> tuple[SphericalAutoencoder, AETrainConfig, torch.Tensor]:
    """The same model and global batch in every process."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SphericalAutoencoder(preset(AE_PRESETS, "tiny"))
    config = AETrainConfig(stage=1, lpips_weight=0.0)
    set_trainable(model, config)
    images = torch.rand(GLOBAL_BATCH, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return model, config, images


def gradients(model: SphericalAutoencoder) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def main(out: str) -> None:
    torch.set_num_threads(1)
    env = init_distributed("cpu")
    model, config, images = build()
    share = GLOBAL_BATCH // env.world_size
    mine = images[env.rank * share:(env.rank + 1) * share]
    step = DistributedDataParallel(TrainForward(model, config))
    losses, _ = generator_losses(step, model, mine, config, None, None)
    losses["loss"].backward()
    if env.is_main:
        torch.save(gradients(model), out)
    shutdown(env)


if __name__ == "__main__":
    main(sys.argv[1])
