"""Utilities shared by the whole framework: event storage, writers, visualisation, distributed helpers.

Submodules are imported explicitly (``from framework.utils.writers import JSONWriter``); only the
event storage, which models and hooks use everywhere, is re-exported here.
"""

from framework.utils.events import EventStorage, get_event_storage

__all__ = ["EventStorage", "get_event_storage"]
