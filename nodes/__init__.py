"""ComfyUI node adapters: thin declarations over the studio's services."""

from .character import CharacterPrompt
from .context import bind_studio
from .dataset import SaveToDataset
from .lora import LoadCharacterLoRA
from .training import TrainLoRA

NODE_CLASS_MAPPINGS = {
    "LoraStudioCharacterPrompt": CharacterPrompt,
    "LoraStudioLoadCharacterLoRA": LoadCharacterLoRA,
    "LoraStudioSaveToDataset": SaveToDataset,
    "LoraStudioTrainLoRA": TrainLoRA,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoraStudioCharacterPrompt": "Character Prompt (LoRA Studio)",
    "LoraStudioLoadCharacterLoRA": "Load Character LoRA (LoRA Studio)",
    "LoraStudioSaveToDataset": "Save to Dataset (LoRA Studio)",
    "LoraStudioTrainLoRA": "Train LoRA (LoRA Studio)",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "bind_studio"]
