"""``python -m adaptiveblur``."""

from adaptiveblur.cli import entry

if __name__ == "__main__":
    entry()
