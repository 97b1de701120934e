"""A training request as the doors check it (the studio side of training/config.py's descriptions).

``TRAIN_SPEC`` is the JSON body of ``POST /characters/{id}/train`` (checked by core.validation, published in
the OpenAPI document), built from the user options' descriptions; ``TrainRequest`` is what the training
service takes: the base model's name and the user options given, checked with the same numbers the worker
uses. The route, the Train LoRA node and the CLI build one with ``TrainRequest.check`` before calling
``TrainingService.start``; the service fills the defaults for the model's architecture (``config.resolve``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..core.errors import InvalidInput
from ..core.validation import Field, Spec, validate
from . import config
from .errors import ConfigError

_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}
BASE_MODEL_FIELD = Field(str, required=True, max_len=500,
                         description="a base model from GET /models: a diffusers folder or a single-file checkpoint")


def option_field(name: str) -> Field:
    """The core.validation Field of one user option: its type, bounds and choices, its help and default."""
    o = config.option(name)
    limit = f" (below {o.max})" if o.below else ""
    return Field(_TYPES[o.kind], min=o.min, max=o.max, choices=o.choices,
                 description=f"{o.help}{limit} (default {config.default_text(name)})")


def train_spec() -> Spec:
    spec: Spec = {"base_model": BASE_MODEL_FIELD}
    for name in config.USER_OPTIONS:
        spec[name] = option_field(name)
        for alias in config.option(name).aliases:
            spec[alias] = Field(spec[name].type, min=spec[name].min, max=spec[name].max,
                                description=f"the same as {name} (kohya's name)")
    return spec


TRAIN_SPEC: Spec = train_spec()


@dataclass(frozen=True)
class TrainRequest:
    """A checked training request: the base model's name (from GET /models) and the user options given
    (aliases renamed to their option); the options not given get the defaults of the model's architecture."""

    base_model: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @classmethod
    def check(cls, body: Any) -> TrainRequest:
        """From a JSON body (or the node's and CLI's dict of the same shape); bad input is an InvalidInput."""
        data = validate(body, TRAIN_SPEC)
        base_model = data.pop("base_model")
        try:
            options = config.check_options(data)
        except ConfigError as e:
            raise InvalidInput(str(e)) from None
        return cls(base_model, options)
