"""The file formats vlaworld reads and writes: LeRobot checkpoints and the Hugging Face models they name.

``lerobot`` (a ``pretrained_model/`` directory: config, weights, processors; saving it back),
``processors`` and ``normalization`` (the processor pipelines and their stats), ``architecture`` (the
model configs a checkpoint implies), ``vjepa2`` (the world encoder's files), ``hub`` (the offline Hugging
Face cache lookup), ``strict`` (state dicts filled with nothing missing or left over), ``files`` (JSON and
safetensors reading with errors that name the file). Nothing here runs a pickle or reaches the network.
"""

from vlaworld.checkpoint.files import CheckpointError
from vlaworld.checkpoint.hub import ModelFilesNotFound, find_model_dir
from vlaworld.checkpoint.lerobot import (
    Checkpoint,
    CheckpointSource,
    checkpoint_hash,
    read_checkpoint,
    resolve_checkpoint_dir,
    save_checkpoint,
)

__all__ = [
    "Checkpoint", "CheckpointError", "CheckpointSource", "ModelFilesNotFound", "checkpoint_hash",
    "find_model_dir", "read_checkpoint", "resolve_checkpoint_dir", "save_checkpoint",
]
