"""``python -m adaptiveblur``."""

from adaptiveblur.cli import entry

entry()
