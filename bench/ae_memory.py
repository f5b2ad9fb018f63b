"""Peak CPU memory of one autoencoder training step, with and without gradient checkpointing.

Each setting runs in a fresh process (peak resident memory, ``ru_maxrss``, only
grows): the preset's model at its image size, stage 1 (stem and decoder train,
LPIPS on), one forward, backward and AdamW step on random images. Prints a
markdown table; ``--json`` writes the numbers too.

    python bench/ae_memory.py --preset B --image-size 256 --batch-size 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def one_step(preset: str, image_size: int, batch_size: int, checkpointing: bool) -> dict:
    import warnings

    import torch

    from dinosae.config import AETrainConfig, model_config
    from dinosae.metrics.lpips import LPIPS
    from dinosae.models.autoencoder import SphericalAutoencoder
    from dinosae.train.autoencoder import TrainForward, generator_losses, set_trainable
    from dinosae.train.rng import step_generator

    warnings.simplefilter("ignore")
    _, config = model_config(f"ae-{preset}", image_size=image_size)
    model = SphericalAutoencoder(config)
    train = AETrainConfig(stage=1, lpips_weight=1.0)
    params = set_trainable(model, train)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    lpips = LPIPS(validate=False)
    model.decoder.checkpointing = lpips.checkpointing = checkpointing
    images = torch.rand(batch_size, 3, image_size, image_size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    losses, _ = generator_losses(TrainForward(model, train), model, images, step_generator(0, 0, 0, images.device),
                                 train, lpips, None)
    losses["loss"].backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"checkpointing": checkpointing, "peak_gib": peak / 2**20, "before_step_gib": before / 2**20,
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="B")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", choices=["plain", "checkpointing"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_step(args.preset, args.image_size, args.batch_size, args.one == "checkpointing")))
        return
    rows = []
    for mode in ("plain", "checkpointing"):
        command = [sys.executable, __file__, "--one", mode, "--preset", args.preset, "--image-size",
                   str(args.image_size), "--batch-size", str(args.batch_size)]
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    print(f"| preset {args.preset}, {args.image_size} px, batch {args.batch_size} | peak RSS (GiB) | "
          "before the step (GiB) | step (s) |")
    print("|---|---|---|---|")
    for row in rows:
        name = "--grad-checkpoint" if row["checkpointing"] else "plain"
        print(f"| {name} | {row['peak_gib']:.2f} | {row['before_step_gib']:.2f} | {row['seconds']:.1f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"settings": vars(args), "results": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
