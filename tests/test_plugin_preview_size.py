"""How large the plug-in asks for live previews (GIMP-free; the GDK part runs in tests/test_gimp.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gimp_plugin"))

from preview_size import NO_SCREEN_MAX_SIDE, PREVIEW_MAX_SIDE_ENV, Monitor, preview_max_side  # noqa: E402
from user_error import UserError  # noqa: E402


def test_the_largest_monitors_longest_side_in_device_pixels():
    monitors = [Monitor(1920, 1080, 1), Monitor(1440, 900, 2), Monitor(1080, 1920, 1)]
    assert preview_max_side({}, monitors) == 2880


def test_without_a_screen_a_large_screens_width():
    assert preview_max_side({}, []) == NO_SCREEN_MAX_SIDE


def test_the_environment_asks_for_smaller_previews_whatever_the_screen():
    assert preview_max_side({PREVIEW_MAX_SIDE_ENV: " 640 "}, [Monitor(3840, 2160, 1)]) == 640
    assert preview_max_side({PREVIEW_MAX_SIDE_ENV: ""}, [Monitor(3840, 2160, 1)]) == 3840


@pytest.mark.parametrize("value", ["big", "8", "-100", "1.5"])
def test_a_bad_value_in_the_environment_says_what_it_must_be(value):
    with pytest.raises(UserError, match=f"{PREVIEW_MAX_SIDE_ENV} must be a whole number of pixels, at least 16"):
        preview_max_side({PREVIEW_MAX_SIDE_ENV: value}, [])
