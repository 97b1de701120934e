"""Importing this module declares every route (each module registers on `api`)."""

from . import catalog, dataset, meta, work  # noqa: F401
