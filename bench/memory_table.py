"""The tables of BENCHMARKS.md's "Memory per GPU (predictions)": every number from ``dinosae.bench.memory``.

- the lean training path: bytes the B and L autoencoders' reconstruction path saves for the backward
  (the issue's count: batch 1 and 2, bf16 autocast, 256 px);
- predictions per GPU: autoencoders B and L, stages 1-4, 32 and 64 per GPU, decoder/LPIPS checkpointing off
  and on; DiT-B/L/XL with the dino-sae recipe (bf16, 32 per GPU: global 256 on 8 GPUs) and the hae recipe
  (float32, 128 per GPU: global 1024 on one node), block checkpointing off and on;
- the check: the prediction against a real CPU step's peak (live tensor storage, and the resident memory
  of a process whose allocator returns freed blocks at once) for tiny presets;
- with ``--image-size 512``, the predictions alone at 512 px: autoencoders B and L in stages 1 and 2 at 8 and
  16 per GPU, and the DiTs over 32 x 32 = 1024 tokens.

    python bench/memory_table.py > bench/results/memory_predictions.md     # about 10 minutes on 2 cores
    python bench/memory_table.py --image-size 512 > bench/results/memory_predictions_512.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, replace

os.environ.setdefault("TRITON_INTERPRET", "1")  # timm imports triton; the sphere ops' CPU tests want this

from dinosae.bench import memory  # noqa: E402
from dinosae.bench.memory import GIB  # noqa: E402
from dinosae.bench.trainer_steps import MemoryCase, Tracer, measure_peak  # noqa: E402

AE_PRESETS = ("B", "L")
# Stages 3 and 4 train what stage 1 does (see the 256 px table), so 512 px shows stages 1 and 2.
STAGES = {256: (1, 2, 3, 4), 512: (1, 2)}
AE_BATCHES = {256: (32, 64), 512: (8, 16)}
DIT_PRESETS = ("B", "L", "XL")
DIT_RECIPES = {"dino-sae": 32, "hae": 128}
CHECKS = [dict(kind="ae", preset="tiny", image_size=64, stage=1, batch=8),
          dict(kind="ae", preset="tiny", image_size=64, stage=2, batch=4),
          dict(kind="ae", preset="S", image_size=64, stage=1, batch=4),
          dict(kind="dit", preset="tiny", batch=16),
          dict(kind="dit", preset="S", batch=8, recipe="hae", latent_dim=384)]


def _mib(value: float) -> str:
    return f"{value / 2**20:.0f}"


def lean_path() -> list[str]:
    rows = ["| preset | saved at batch 1 (GiB) | saved at batch 2 (GiB) | per added image (GiB) |", "|---|---|---|---|"]
    for preset in AE_PRESETS:
        one, two = (memory.reconstruction_saved(preset, 256, batch) for batch in (1, 2))
        rows.append(f"| ae-{preset} | {one / GIB:.3f} | {two / GIB:.3f} | {(two - one) / GIB:.3f} |")
    return rows


MODULES = {"ae": ("stem", "vit", "decoder", "lpips", "alignment teacher", "discriminator", "other"),
           "dit": ("embeddings", "blocks", "final layer", "other")}


def predictions(progress, image_size: int = 256) -> tuple[list[str], dict[str, list[str]]]:
    summary = [memory.SUMMARY_HEADER]
    modules = {kind: [f"| model | stage | recipe | checkpointing | {' | '.join(labels)} | total |",
                      "|---" * (len(labels) + 5) + "|"] for kind, labels in MODULES.items()}
    ae_batches = AE_BATCHES[image_size]
    cases = [MemoryCase("ae", p, stage=s, batch=ae_batches[0], checkpointing=c, image_size=image_size)
             for p in AE_PRESETS for s in STAGES[image_size] for c in (False, True)]
    cases += [MemoryCase("dit", p, recipe=r, batch=b, checkpointing=c, image_size=image_size)
              for p in DIT_PRESETS for r, b in DIT_RECIPES.items() for c in (False, True)]
    for case in cases:
        progress(f"{case.name} {case.recipe} checkpointing={case.checkpointing}")
        tracer = Tracer(case)
        for batch in ae_batches if case.kind == "ae" else (case.batch,):
            prediction = memory.predict(replace(case, batch=batch), tracer=tracer)
            summary.append(memory.summary_row(prediction))
        saved = prediction.saved_per_image
        cells = [_mib(saved[label]) if label in saved else "-" for label in MODULES[case.kind]]
        modules[case.kind].append(f"| {case.kind}-{case.preset} | {case.stage if case.kind == 'ae' else '-'} | "
                                  f"{case.recipe} | {'on' if case.checkpointing else 'off'} | {' | '.join(cells)} | "
                                  f"{_mib(sum(saved.values()))} |")
    return summary, modules


def check_one(settings: dict) -> dict:
    case = MemoryCase(**settings, ddp=False, reserve_gib=0.0)
    predicted = memory.predict(case, gpu_memory_gib=None).total
    measured = measure_peak(case)
    return {"settings": settings, "precision": case.resolved_precision, "predicted": predicted,
            **asdict(measured)}


def checks(progress) -> list[str]:
    rows = ["| case | precision | predicted (MiB) | measured: live tensors (MiB) | predicted / measured | "
            "step's rise: tensors / RSS (MiB) |", "|---|---|---|---|---|---|"]
    # glibc must return freed blocks to the kernel at once for the resident memory to follow the tensors
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", PYTHONWARNINGS="ignore")
    for settings in CHECKS:
        progress(f"check {settings}")
        output = subprocess.run([sys.executable, __file__, "--check-one", json.dumps(settings)], env=env,
                                check=True, capture_output=True, text=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        name = f"{settings['kind']}-{settings['preset']}" + (f" stage {settings['stage']}" if "stage" in settings else "")
        size = settings.get("image_size", 256)
        rows.append(f"| {name}, {size} px, batch {settings['batch']}{', hae' if settings.get('recipe') else ''} | "
                    f"{result['precision']} | {_mib(result['predicted'])} | {_mib(result['tensors'])} | "
                    f"{result['predicted'] / result['tensors']:.3f} | {_mib(result['tensors_step'])} / "
                    f"{_mib(result['rss_step'])} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-one", help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, choices=sorted(AE_BATCHES), default=256)
    args = parser.parse_args()
    if args.check_one:
        print(json.dumps(check_one(json.loads(args.check_one))))
        return

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.image_size == 256:
        print("\n".join(["### Lean training path", "", *lean_path(), ""]))
    summary, modules = predictions(progress, args.image_size)
    print("\n".join([f"### Predicted peak per GPU (GiB), {args.image_size} px", "", *summary, "",
                     "### Saved for the backward per image, by module (MiB)", "", *modules["ae"], "",
                     *modules["dit"], ""]))
    if args.image_size == 256:
        print("\n".join(["### Prediction against a real CPU step", "", *checks(progress)]))


if __name__ == "__main__":
    main()
