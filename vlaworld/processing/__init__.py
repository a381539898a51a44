"""A batch in LeRobot's feature names -> the model's ``PrefixInputs``, and sampled actions -> env actions.

``inputs`` (``InputProcessor``: rename, images, state, prompt, unnormalised actions), ``tokenizer``
(the task prompt, as LeRobot's tokenizer step), ``transforms`` (resize-with-pad and friends), ``noise``
(per-episode random draws).
"""

from vlaworld.processing.inputs import InputProcessor, batch_size
from vlaworld.processing.noise import per_row_normal
from vlaworld.processing.tokenizer import TaskTokenizer, TokenizerSettings, task_tokenizer
from vlaworld.processing.transforms import pad_vector, resize_with_pad, to_float_chw

__all__ = [
    "InputProcessor", "TaskTokenizer", "TokenizerSettings", "batch_size", "pad_vector", "per_row_normal",
    "resize_with_pad", "task_tokenizer", "to_float_chw",
]
