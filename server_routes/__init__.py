"""LoRA Studio server_routes."""
