"""Hydra glue: schemas generated from registered components, config groups, composition, plugins."""
