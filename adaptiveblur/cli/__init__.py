"""The command line (:mod:`adaptiveblur.cli.app`); ``entry`` is the console script."""

from adaptiveblur.cli.app import app, entry, main

__all__ = ["app", "entry", "main"]
