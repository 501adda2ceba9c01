"""adaptiveblur.settings: bad values are refused before any work, good ones pass."""

from __future__ import annotations

import pytest

from adaptiveblur.errors import InvalidParameterError
from adaptiveblur.settings import BlurSettings, FileOptions


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_sigma": -1.0}, "max_sigma"),
        ({"max_sigma": float("nan")}, "finite"),
        ({"max_sigma": float("inf")}, "finite"),
        ({"min_sigma": -0.5}, "min_sigma"),
        ({"min_sigma": 3.0}, "min_sigma"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": float("nan")}, "finite"),
        ({"truncate": 0.0}, "truncate"),
        ({"border": "wrap"}, "border"),
        ({"max_memory": 0}, "max_memory"),
    ],
)
def test_settings_check_rejects_bad_values(changes, message):
    settings = BlurSettings(**{"max_sigma": 2.0, **changes})
    with pytest.raises(InvalidParameterError, match=message):
        settings.check()


def test_settings_check_accepts_defaults_and_zero_sigma():
    BlurSettings(max_sigma=2.0).check()
    BlurSettings(max_sigma=0.0).check()
    BlurSettings(max_sigma=1.0, min_sigma=1.0, gamma=0.5, border="constant", max_memory=1).check()


@pytest.mark.parametrize(
    ("changes", "message"), [({"quality": 0}, "quality"), ({"output_format": "gif"}, "gif")]
)
def test_file_options_check_rejects_bad_values(changes, message):
    with pytest.raises(InvalidParameterError, match=message):
        FileOptions(**changes).check()
