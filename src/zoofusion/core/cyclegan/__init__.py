"""Per-layer kernel CycleGAN: translate one model's conv-layer weights between two zoos.

A sample is ONE model's weight for one conv layer, ``[C, D, 5, 5]`` (C output channels, each a ``D x 5 x 5``
volume); data tensors are ``[N, C, D, 5, 5]``. Domains A and B are unpaired (``Na != Nb``).

Read in this order, each in one sitting:

* :mod:`~zoofusion.core.cyclegan.nets`: the two network families (``volume``, the study's Conv3d nets, and
  ``set``, permutation-equivariant along D) and their factories;
* :mod:`~zoofusion.core.cyclegan.losses`: the loss terms, the linear lr decay and the image pool (the reference
  CycleGAN's training details, off in the study's setting: with the study's values the trajectory is the
  study's, bit for bit);
* :mod:`~zoofusion.core.cyclegan.loop`: the config, kernel scaling, :func:`train_cyclegan` (explicit resume:
  ``on_checkpoint`` hands out states, ``resume`` takes one back) and :func:`translate`.

Pure: no files, MLflow or params. ``zoofusion.steps.cyclegan`` writes checkpoints and generators.
"""

from zoofusion.core.cyclegan.losses import ImagePool, adversarial_loss, cycle_loss, identity_loss, lr_factor
from zoofusion.core.cyclegan.loop import (HEADROOM, KERNEL_SIZE, LOSS_NAMES, STATE_FORMAT, CycleGANConfig,
                                          CycleGANResult, KernelScaler, OnCheckpoint, OnEpoch, TrainingDiverged,
                                          data_fingerprint, initial_cyclegan, resume_mismatch,
                                          train_cyclegan, trajectory_fields,
                                          translate)
from zoofusion.core.cyclegan.nets import (ARCHS, DISC_OUTPUTS, Discriminator, Generator, SetDiscriminator,
                                          SetGenerator, make_discriminator, make_generator)

__all__ = [
    "ARCHS", "DISC_OUTPUTS", "HEADROOM", "KERNEL_SIZE", "LOSS_NAMES", "STATE_FORMAT", "CycleGANConfig",
    "CycleGANResult", "Discriminator", "Generator", "ImagePool", "KernelScaler", "OnCheckpoint", "OnEpoch",
    "SetDiscriminator", "SetGenerator", "TrainingDiverged", "adversarial_loss", "cycle_loss", "data_fingerprint",
    "initial_cyclegan",
    "identity_loss", "lr_factor", "make_discriminator", "make_generator", "resume_mismatch", "train_cyclegan",
    "trajectory_fields", "translate",
]
