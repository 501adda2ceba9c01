"""``python -m adaptiveblur``."""

from adaptiveblur.cli import entry

if __name__ == "__main__":  # not when a worker process imports it again (spawn)
    entry()
