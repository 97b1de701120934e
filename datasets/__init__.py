"""LoRA Studio datasets."""
