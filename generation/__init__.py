"""Generation: ComfyUI graphs the studio builds, the ComfyUI client, the generation service and regeneration
after rejections."""
