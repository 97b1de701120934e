"""The character input of every node: one combo of "Project name / Character name" labels, so a character can
only be picked together with its own project. The labels are read from the studio each time ComfyUI asks for
the node's inputs (new characters appear after "Refresh node definitions") and a label is looked up exactly,
never split: names may contain " / " themselves."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.errors import InvalidInput, NotFound
from .context import choices

if TYPE_CHECKING:
    from ..core.characters import Character
    from ..studio import Studio

SEPARATOR = " / "
NO_CHARACTER = "(no characters: create one in the LoRA Studio panel, then Refresh node definitions)"
TOOLTIP = "project / character, as named in LoRA Studio"


def _projects(s: Studio) -> dict[int, str]:
    """Project id -> name (the one place the nodes read the project list)."""
    return {p.id: p.name for p in s.projects.list().items}


def character_labels(s: Studio) -> dict[str, int]:
    """Label -> character id for every character, sorted by project then character name. Two characters whose
    plain labels collide (names with " / " in them) get their slugs appended, which are unique."""
    projects = _projects(s)
    plain: dict[str, list] = {}
    for c in s.characters.list().items:
        plain.setdefault(f"{projects.get(c.project_id, c.project_slug)}{SEPARATOR}{c.name}", []).append(c)
    labels: dict[str, tuple[tuple[str, str], int]] = {}
    for label, group in plain.items():
        for c in group:
            key = label if len(group) == 1 else f"{label} ({c.project_slug}/{c.slug})"
            labels[key] = ((projects.get(c.project_id, "").casefold(), c.name.casefold()), c.id)
    return {label: cid for label, (_, cid) in sorted(labels.items(), key=lambda kv: (kv[1][0], kv[0]))}


def character_input() -> tuple:
    """The `character` combo (a placeholder while the studio has none or is not ready)."""
    return (choices(lambda s: list(character_labels(s)), NO_CHARACTER), {"tooltip": TOOLTIP})


def find_character(s: Studio, label: str) -> Character:
    """The character a label names (exactly as the combo offers it)."""
    if not isinstance(label, str) or label == NO_CHARACTER:
        raise InvalidInput("pick a character: create one in the LoRA Studio panel, then Refresh node definitions")
    cid = character_labels(s).get(label)
    if cid is None:
        raise NotFound(f"no character '{label}' in LoRA Studio (renamed or deleted? pick it again after "
                       "Refresh node definitions)")
    return s.characters.get(cid)
