"""Names of the timed chunk stages (torch-free, so the CLI can parse before torch loads)."""

SMOLVLA_STAGES = ("vision", "prefix", "denoise")
WORLD_STAGES = ("world_encoder", "world_encoder_core", "prophet")
TOTALS = ("total_smolvla", "total")
ALL_STAGES = SMOLVLA_STAGES + WORLD_STAGES + TOTALS
