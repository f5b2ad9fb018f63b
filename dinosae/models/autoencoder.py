"""DINO-SAE: the spherical encoder and the decoder as one model."""

from __future__ import annotations

import logging
import math
import os
import warnings

import torch
from torch import nn

import sphere_ops
from dinosae.config import AEConfig
from dinosae.io.checkpoint import CheckpointError
from dinosae.models.decoder import Decoder
from dinosae.models.encoder import DinoSphericalEncoder
from dinosae.models.hub import PretrainedMixin
from dinosae.models.record import VIT_PREFIX, ModelRecord, check_fits, load_record_weights
from dinosae.models.vit import RandomTeacherWarning, family_name, load_vit_state

logger = logging.getLogger(__name__)


class SphericalAutoencoder(PretrainedMixin, nn.Module):
    """Images in [0, 1] -> unit latents (B, N, D) -> images in [0, 1].

    ``encode`` returns the spherical latent: each token's direction, which is
    what flow matching models. What the decoder takes is a convention of the
    decoder's training (``config.latent_scale``): this toolkit's decoders take
    a unit token times sqrt(D); the official release's take the encoder's
    final-norm token as it is, magnitude included. ``forward`` (a
    reconstruction) always decodes what the encoder produced, as the decoder
    was trained to; ``decode`` takes unit latents (from ``encode`` or a
    generator) and scales them by ``config.decode_scale`` when set (the HAE
    paper's s_vae), else by the convention's own factor.

    ``state_dict`` keys start with ``encoder.stem.``, ``encoder.vit.`` and
    ``decoder.``. Checkpoints store the frozen ViT only when it is not read
    from a teacher-weights file (a random teacher cannot be rebuilt otherwise).
    ``teacher_origin`` is the file the ViT's weights came from (None: random);
    it outlives ``teacher_weights`` when the ViT is reloaded from a folder
    that carries it (``save_pretrained`` / ``from_pretrained``).

    Example:
        >>> import warnings
        >>> from dinosae.config import AE_PRESETS, preset
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     model = SphericalAutoencoder(preset(AE_PRESETS, "tiny"))
        >>> images = torch.rand(2, 3, 64, 64)
        >>> model.encode(images).shape, model(images).shape
        (torch.Size([2, 16, 192]), torch.Size([2, 3, 64, 64]))
    """

    pretrained_kind = "autoencoder"

    def __init__(self, config: AEConfig, teacher_weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.config = config
        self.teacher_weights = None if teacher_weights is None else str(teacher_weights)
        self.teacher_origin: str | None = self.teacher_weights
        self.encoder = DinoSphericalEncoder(config.vit, config.image_size, config.stem, teacher_weights,
                                            config.stem_norm, config.pixel_input, config.vit_depth)
        self.decoder = Decoder(self.encoder.dim, config.decoder)

    @property
    def latent_dim(self) -> int:
        return self.encoder.dim

    @property
    def latent_gain(self) -> float:
        """The factor that turns a unit latent into the decoder's input."""
        config = self.config
        if config.decode_scale is not None:
            return config.decode_scale
        if config.latent_scale == "sqrt_dim":
            return math.sqrt(self.latent_dim)
        if config.latent_scale == "raw_tokens":
            raise ValueError("this decoder takes the encoder's tokens with their magnitudes (latent_scale "
                             "'raw_tokens'): decoding unit latents needs decode_scale, the token norm to "
                             "decode at (the HAE paper's s_vae: 14 for DINOv3 ViT-L)")
        return float(config.latent_scale)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Unit latents (B, N, D) of images in [0, 1]."""
        return self.encoder(images)

    def decoder_input(self, tokens: torch.Tensor) -> torch.Tensor:
        """What the decoder takes for the encoder's final-norm ``tokens`` (B, N, D)."""
        if self.config.latent_scale == "raw_tokens":
            return tokens
        return sphere_ops.normalize(tokens) * self.latent_gain

    def to_pixels(self, prediction: torch.Tensor) -> torch.Tensor:
        """The decoder's prediction as images in [0, 1] (not clamped: saturated pixels keep gradients)."""
        return prediction * 0.5 + 0.5 if self.config.pixel_output == "signed" else prediction

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from unit latents (B, N, D)."""
        return self.to_pixels(self.decoder(latents * self.latent_gain))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The reconstruction of images in [0, 1]: encode, and decode as the decoder was trained."""
        return self.to_pixels(self.decoder(self.decoder_input(self.encoder.student_tokens(images))))

    @classmethod
    def from_record(cls, record: ModelRecord, teacher_weights: str | os.PathLike | None = None
                    ) -> SphericalAutoencoder:
        """The autoencoder a file holds (``dinosae.models.record``), with its teacher decided once, here.

        - Weights without the ViT (a run or folder whose ViT came from a teacher file): the ViT is built
          from ``teacher_weights``, else from the file the record names, which must exist.
        - Weights with the ViT but not its patch embedding (an official release, and what was trained
          from one): the ViT is the record's, and the teacher stays refused (``teacher_missing``)
          unless ``teacher_weights`` supply the patch embedding.
        - Weights with the whole ViT: it is used as it is. A random one is said so once, loudly, and
          ``teacher_weights`` are refused: they would not be the ViT its decoder was trained on.
        """
        given = None if teacher_weights is None else str(teacher_weights)
        teacher, weights = record.teacher, dict(record.weights)
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore", RandomTeacherWarning)
            check_fits(cls(record.config), weights, record.source)
        has_vit = record.vit_in_weights
        if not has_vit:
            file = given or teacher.file
            if file is None:
                raise CheckpointError(f"{record.source!r} holds no ViT weights and names no teacher file; pass "
                                      "--teacher-weights FILE (teacher_weights=)")
        elif teacher.missing is not None:
            file = given
        elif teacher.random(has_vit):
            if given is not None:
                raise CheckpointError(f"{record.source!r} was trained with a random ViT, which its decoder reads: "
                                      f"--teacher-weights {given!r} would replace it; leave the flag out")
            warnings.warn(f"{record.source!r} has a random ViT teacher (it was made without "
                          f"{family_name(record.config.vit)} weights): its latents and reconstructions are not "
                          "DINO-SAE's", RandomTeacherWarning, stacklevel=3)
            file = None
        else:
            if given is not None:
                logger.info("%s carries its own ViT (from %s); --teacher-weights %s is not needed", record.source,
                            teacher.origin, given)
            file = None
        if file is not None and not os.path.isfile(file):
            raise CheckpointError(f"the teacher weights {file!r} that {record.source!r} needs are missing; pass "
                                  "--teacher-weights FILE (teacher_weights=)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomTeacherWarning)  # the ViT's random weights are replaced below
            model = cls(record.config, file)
        missing = teacher.missing
        if file is not None and missing is not None:
            # The record's ViT lacks its patch embedding: the file's is the teacher's.
            weights = {k: v for k, v in weights.items() if not k.startswith(f"{VIT_PREFIX}patch_embed.")}
            missing = None
        if record.vit:
            absent = load_vit_state(model.encoder.vit, record.vit, record.source, record.config.vit)
            if any(not key.startswith("patch_embed.") for key in absent):
                raise CheckpointError(f"{record.source!r} lacks ViT weights {absent[:5]}")
        load_record_weights(model, weights, record.source, optional=(VIT_PREFIX,) if record.vit else ())
        model.teacher_origin = teacher.origin if has_vit else file
        model.encoder.teacher_missing = missing
        return model

    def weights_to_save(self) -> dict[str, torch.Tensor]:
        """The state dict minus the frozen ViT when that comes from a weights file."""
        state = self.state_dict()
        if self.teacher_weights is not None:
            state = {k: v for k, v in state.items() if not k.startswith("encoder.vit.")}
        return state
