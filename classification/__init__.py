"""Classification: suggesting a character for new images and auto-review (Ollama vision LLM or local CLIP
embeddings), as jobs."""
