"""Helpers the tests share: tiny checkpoints in the real formats, a transcription of LeRobot's file layout,
the transformers-based reference SmolVLA, stand-in envs and policies, server helpers. Not tests themselves."""
