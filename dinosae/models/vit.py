"""The frozen ViT: creation from a local weights file, and running it on a token grid.

The student and the teacher share one ViT; they differ only in what turns the
image into the NHWC token grid (the trainable stem or the ViT's own patch
embedding). ``run_on_grid`` is the ViT's ``forward_features`` with the patch
embedding taken out.

Two timm model families work: DINOv3 (timm's ``Eva``, RoPE) and the plain
``VisionTransformer`` with learned positions, which timm resamples to any grid
(DINOv2 with registers, SigLIP2, MAE, CLIP). The latent grid is always the
image's size / 16, whatever the ViT's patch: the stem reaches it, and the
teacher sees the image resized to grid x patch (224 px for a patch-14 ViT at
256 px), so that student and teacher tokens match position for position and the
decoder and the DiT are those of every other encoder. The teacher's pixels are
standardized with the statistics of the timm model's own ``pretrained_cfg``
(ImageNet's for DINOv3, DINOv2 and MAE, 0.5 for SigLIP2, OpenAI's for CLIP).
"""

from __future__ import annotations

import os
import warnings

import timm
import torch
from torch import nn
from torch.nn import functional as F

from dinosae.io.tensor_files import read_weights

# DINOv3's preprocessing: images in [0, 1] are standardized with ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomTeacherWarning(UserWarning):
    """The ViT has random weights: alignment, probing and the GAN teacher carry no meaning."""


def create_vit(name: str, image_size: int, weights: str | os.PathLike | None = None,
               depth: int | None = None) -> nn.Module:
    """A frozen timm ViT in eval mode, with weights from a local file if given.

    ``name`` is a timm model name, with a pretrained tag where the tag sets the
    input statistics (``vit_base_patch16_224.mae``). ``weights`` is a ``.pth``
    or ``.safetensors`` file in timm's key names or in the family's original
    release names (see :func:`load_vit_state`), or a JAX ``.npz``
    (:func:`load_big_vision`). Without it the ViT is randomly
    initialized, and a ``RandomTeacherWarning`` says so: nothing is downloaded.
    ``depth`` keeps only the first blocks.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     vit = create_vit("vit_tiny_patch16_dinov3_qkvb", image_size=64, depth=2)
        >>> vit.embed_dim, len(vit.blocks), any(p.requires_grad for p in vit.parameters())
        (192, 2, False)
    """
    overrides = {} if depth is None else {"depth": depth}
    if not timm.is_model(name):
        raise ValueError(f"{name!r} is not a timm model; the frozen encoder is a timm ViT (see dinosae.list_models())")

    def build(size: int) -> nn.Module:
        return timm.create_model(name, pretrained=False, img_size=size, num_classes=0, dynamic_img_size=True,
                                 **overrides)

    vit = build(image_size)
    if not hasattr(vit, "_pos_embed") or not getattr(vit, "dynamic_img_size", False):
        raise ValueError(f"{name} does not take NHWC token grids (dynamic_img_size); use a timm DINOv3 ViT or "
                         "VisionTransformer")
    patch = patch_size(vit)
    if patch != 16:
        # Learned positions are stored for the teacher's grid: the image's grid at the ViT's own patch.
        vit = build(image_size // 16 * patch)
    if weights is not None and str(weights).endswith(".npz"):
        load_big_vision(vit, weights)
    elif weights is not None:
        missing = load_vit_state(vit, read_weights(weights, "teacher weights"), source=str(weights),
                                 name=name)
        if missing:
            raise ValueError(f"teacher weights {str(weights)!r} lack {missing[:5]}")
    else:
        warnings.warn(f"no --teacher-weights given: {name} is randomly initialized, so the "
                      "teacher, the alignment loss and the discriminator features are not "
                      "the pretrained ViT's and results are not meaningful", RandomTeacherWarning, stacklevel=2)
    vit.requires_grad_(False)
    return vit.eval()


# Substrings of timm names, most specific first ("siglip" before "clip"), and how messages write each family.
_FAMILY_NAMES = (("dinov3", "DINOv3"), ("dinov2", "DINOv2"), ("siglip", "SigLIP"), ("clip", "CLIP"),
                 ("mae", "MAE"))


def family_name(name: str) -> str:
    """The encoder family of timm model ``name`` as messages write it, or ``name`` itself if unknown.

    Example:
        >>> family_name("vit_base_patch16_dinov3"), family_name("vit_base_patch16_siglip_256.v2_webli")
        ('DINOv3', 'SigLIP')
        >>> family_name("vit_large_patch14_clip_224.openai"), family_name("vit_base_patch16_224")
        ('CLIP', 'vit_base_patch16_224')
    """
    return next((family for key, family in _FAMILY_NAMES if key in name), name)


def patch_size(vit: nn.Module) -> int:
    """The side of the ViT's own (square) patches."""
    size = vit.patch_embed.patch_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def uses_rope(vit: nn.Module) -> bool:
    """Whether the ViT places tokens by rotary embeddings (DINOv3) rather than learned positions."""
    return getattr(vit, "rope", None) is not None


def nonzero_qv_biases(state: dict[str, torch.Tensor]) -> list[str]:
    """The keys of Meta-named DINOv3 weights whose ``attn.qkv.bias`` is not all zero: q/v biases to keep.

    Example:
        >>> nonzero_qv_biases({"blocks.0.attn.qkv.bias": torch.ones(3), "blocks.1.attn.qkv.bias": torch.zeros(3)})
        ['blocks.0.attn.qkv.bias']
    """
    return [k for k, v in state.items() if k.endswith("attn.qkv.bias") and bool(v.abs().max() > 0)]


def load_vit_state(vit: nn.Module, state: dict[str, torch.Tensor], source: str, name: str = "the ViT") -> list[str]:
    """Load weights in timm's key names or the family's original ones into a timm ViT; returns the keys
    still missing.

    DINOv3 in Meta's names goes through timm's own converter, which drops a
    ``qkv.bias`` the model has no parameter for: a ViT without q/v biases would
    silently compute other tokens, so non-zero ones are refused (take the
    ``_qkvb`` variant). The other families go through timm's ViT converter,
    which reads DINOv2's release names (``register_tokens``, ``mask_token``),
    OpenAI's and OpenCLIP's CLIP names, and resamples learned positions stored
    for another grid. A state wrapped as ``{"model": ...}`` (MAE's release) is
    unwrapped. Blocks beyond the model's depth are dropped; any other unknown
    key is an error.
    """
    if isinstance(state, dict) and len(state) == 1 and set(state) <= {"model", "state_dict"}:
        state = next(iter(state.values()))  # a training script's wrapper, as MAE's release has
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source} does not hold a flat dict of tensors")
    if uses_rope(vit):
        if "storage_tokens" in state:
            from timm.models.eva import checkpoint_filter_fn

            has_qv_bias = any(k.endswith("q_bias") for k in vit.state_dict())
            biased = nonzero_qv_biases(state)
            if biased and not has_qv_bias:
                raise ValueError(f"{source} has non-zero q/v biases ({biased[0]}, ...), which {name} has no "
                                 f"parameters for: use {name.removesuffix('_qkvb')}_qkvb")
            state = checkpoint_filter_fn(state, vit)
    else:
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(state, vit)
        if not any(key.startswith("head.") for key in vit.state_dict()):
            # A classifier, or CLIP's projection into the text space: neither is on the tokens' path.
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
    depth = len(vit.blocks)
    state = {k: v for k, v in state.items() if not (k.startswith("blocks.") and int(k.split(".")[1]) >= depth)}
    missing, unexpected = vit.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{source} has ViT keys {name} does not: {sorted(unexpected)[:5]}")
    return list(missing)


def load_big_vision(vit: nn.Module, path: str | os.PathLike) -> None:
    """Load a JAX ``.npz`` release (big_vision's SigLIP2, Google's ViTs) with timm's reader; a ViT of timm's
    ``VisionTransformer`` only. Keys the file lacks are an error naming it."""
    if uses_rope(vit) or not hasattr(vit, "load_pretrained"):
        raise ValueError(f"{str(path)!r} is a JAX .npz; {type(vit).__name__} weights come as .pth or .safetensors")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"teacher weights {str(path)!r} do not exist")
    try:
        vit.load_pretrained(str(path))
    except (KeyError, ValueError, RuntimeError) as error:
        raise ValueError(f"teacher weights {str(path)!r} do not fit {type(vit).__name__}: {error}") from error


def pixel_input(images: torch.Tensor, convention: str) -> torch.Tensor:
    """What the stem sees of images in [0, 1]: ``"imagenet"`` (DINOv3's standardization), ``"signed"``
    (2x - 1) or ``"unit"`` (x as it is).

    Example:
        >>> pixel_input(torch.tensor([[[[0.0, 1.0]]]]).expand(1, 3, 1, 2), "signed")[0, 0]
        tensor([[-1.,  1.]])
    """
    if convention == "imagenet":
        return standardize(images)
    if convention == "signed":
        return images * 2.0 - 1.0
    if convention == "unit":
        return images
    raise ValueError(f"unknown pixel input convention {convention!r}")


def standardize(images: torch.Tensor, mean: tuple[float, ...] = IMAGENET_MEAN,
                std: tuple[float, ...] = IMAGENET_STD) -> torch.Tensor:
    """Images in [0, 1] to zero mean and unit variance under ``mean`` and ``std`` (ImageNet's by default)."""
    return (images - images.new_tensor(mean).view(1, 3, 1, 1)) / images.new_tensor(std).view(1, 3, 1, 1)


def run_on_grid(vit: nn.Module, grid: torch.Tensor, depths: tuple[int, ...] = ()
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Patch tokens after the final norm for an NHWC grid, and the tokens after blocks ``depths``.

    Prefix tokens (class and registers) take part in attention as in the ViT's
    training and are dropped from the outputs: (B, H*W, D), and one (B, H*W, D)
    per depth.
    """
    tokens, taps = _run_blocks(vit, grid, depths, len(vit.blocks))
    return vit.norm(tokens)[:, vit.num_prefix_tokens:], taps


def tapped_tokens(vit: nn.Module, grid: torch.Tensor, depths: tuple[int, ...]) -> list[torch.Tensor]:
    """The patch tokens after blocks ``depths`` alone, as :func:`run_on_grid` gives them; the blocks past the
    deepest one and the final norm do not run.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     vit = create_vit("vit_tiny_patch16_dinov3_qkvb", image_size=32, depth=4)
        >>> grid = torch.randn(1, 2, 2, 192)
        >>> [torch.equal(a, b) for a, b in zip(tapped_tokens(vit, grid, (0, 2)), run_on_grid(vit, grid, (0, 2))[1])]
        [True, True]
    """
    _, taps = _run_blocks(vit, grid, depths, max(depths) + 1)
    return taps


def _run_blocks(vit: nn.Module, grid: torch.Tensor, depths: tuple[int, ...], count: int
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    if grid.dim() != 4:
        raise ValueError(f"expected an NHWC token grid (B, H, W, D), got shape {tuple(grid.shape)}")
    placed = vit._pos_embed(grid)
    tokens, rope = placed if isinstance(placed, tuple) else (placed, None)
    tokens = vit.norm_pre(tokens)
    prefix = vit.num_prefix_tokens
    taps = []
    for depth, block in enumerate(vit.blocks[:count]):
        tokens = block(tokens, rope=rope) if rope is not None else block(tokens)
        if depth in depths:
            taps.append(tokens[:, prefix:])
    return tokens, taps


def teacher_grid(vit: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The teacher's NHWC grid of images in [0, 1]: the ViT's own patch embedding of its standardized
    pixels, resized first when its patch is not 16, so that the grid is the image's size / 16."""
    patch = patch_size(vit)
    if patch != 16:
        height, width = images.shape[-2:]
        images = F.interpolate(images, size=(height // 16 * patch, width // 16 * patch), mode="bicubic",
                               antialias=True, align_corners=False)
    config = getattr(vit, "pretrained_cfg", None) or {}
    return vit.patch_embed(standardize(images, config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD)))
