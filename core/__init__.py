"""Services of LoRA Studio: settings, database, projects, characters, jobs, ComfyUI client.

Nothing in this package imports ComfyUI modules or heavy ML libraries.
"""
