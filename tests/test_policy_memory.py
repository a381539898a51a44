"""A loaded Policy holds one copy of the weights: the model's. The checkpoint's tensors, read from the
file in their stored dtypes, are not kept (after ``.to("cuda")`` they would be a second host copy)."""

from __future__ import annotations

import gc
import types

import torch

import vlaworld


def reachable_tensor_bytes(root: object) -> int:
    """Bytes of the distinct tensor storages reachable from ``root`` through object references
    (modules, classes and functions are not followed: they lead to the whole interpreter)."""
    seen: set[int] = set()
    storages: dict[int, int] = {}
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType)):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            continue  # a tensor's referents are its grad and hooks: nothing of the policy's
        todo.extend(gc.get_referents(obj))
    return sum(storages.values())


def model_bytes(model: torch.nn.Module) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


def test_policy_keeps_one_copy_of_the_weights(tiny_world):
    vlm, vjepa, ckpt = tiny_world
    # float32 over a file stored mostly in bf16: any tensor kept from the file is a separate storage
    policy = vlaworld.load_policy(ckpt, vlm=vlm, world_encoder=vjepa, dtype="float32")
    weights = model_bytes(policy.model) + model_bytes(policy.world.encoder)
    held = reachable_tensor_bytes(policy)
    stored = (ckpt / "model.safetensors").stat().st_size
    extra = held - weights
    print(f"model + encoder {weights} B, reachable {held} B, extra {extra} B; checkpoint file {stored} B")
    assert held >= weights
    # what remains besides the weights: normalisation stats, position tables, small caches
    assert extra < 0.05 * stored, f"{extra} B of tensors besides the model's weights are held by the Policy"
