"""Spatial control over the wire (#15): regions and style masks travel as frames with roles, are checked
like images, change the result as the engine's masks do, and key the style cache."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.client.contract import DaemonJobError
from daemon.wire.messages import DType, ErrorCode, Image, ImageSpec

from .daemon_harness import TINY_SETTINGS, image_array, rgb_image, start_daemon

SEEDED = {**TINY_SETTINGS, "init": "noise", "seed": 3}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, weights_file):
    running = start_daemon(tmp_path_factory.mktemp("masks-daemon"), weights_file)
    yield running
    running.stop()


def mask(height: int, width: int, *, left: float = 1.0, right: float = 0.0, dtype: DType = DType.U8,
         channels: int = 1) -> Image:
    """Left half ``left``, right half ``right`` (in [0, 1])."""
    values = np.full((height, width, channels), right, dtype=np.float64)
    values[:, : width // 2] = left
    scale = {DType.U8: 255, DType.U16: 65535, DType.F32: 1}[dtype]
    numpy_type = {DType.U8: np.uint8, DType.U16: "<u2", DType.F32: "<f4"}[dtype]
    data = np.ascontiguousarray((values * scale).astype(numpy_type))
    return Image(ImageSpec(width, height, channels, dtype), memoryview(data).cast("B"))


def with_alpha(image: Image, alpha: Image) -> Image:
    """An RGB u8 image with ``alpha`` (1-channel u8) as its fourth channel."""
    rgba = np.concatenate([image_array(image), image_array(alpha)], axis=2)
    spec = image.spec
    return Image(ImageSpec(spec.width, spec.height, 4, DType.U8), memoryview(np.ascontiguousarray(rgba)).cast("B"))


def pixels(result) -> np.ndarray:
    return image_array(result.image).copy()


def still_serving(daemon) -> None:
    with daemon.client() as fresh:
        assert fresh.status().pid == daemon.process.pid


CONTENT = rgb_image(40, 48, seed=1)
STYLES = [rgb_image(40, 40, seed=2), rgb_image(32, 24, seed=5)]


def test_regions_and_style_masks_change_the_result_and_an_all_white_mask_does_not(client):
    one = pixels(client.stylize(CONTENT, STYLES[:1], SEEDED))
    white = pixels(client.stylize(CONTENT, STYLES[:1], SEEDED, regions=[mask(40, 48, right=1.0)],
                                  style_masks=[mask(40, 40, right=1.0)]))
    assert np.allclose(one, white, atol=1e-6)  # all-white masks: as without masks
    plain = pixels(client.stylize(CONTENT, STYLES, SEEDED))
    halves = pixels(client.stylize(CONTENT, STYLES, SEEDED, regions=[mask(40, 48), mask(40, 48, left=0.0, right=1.0)]))
    masked = pixels(client.stylize(CONTENT, STYLES, SEEDED, style_masks=[mask(40, 40), None]))
    assert not np.allclose(plain, halves, atol=1e-3) and not np.allclose(plain, masked, atol=1e-3)


@pytest.mark.parametrize("dtype", [DType.U8, DType.U16, DType.F32])
def test_a_style_with_alpha_uses_it_as_its_style_mask(client, dtype):
    """An RGBA style image gives the result of the same RGB image with its alpha sent as the style mask;
    a fully opaque alpha, the result of the RGB image alone."""
    style = STYLES[0]
    alpha = mask(40, 40)
    explicit = pixels(client.stylize(CONTENT, [style], SEEDED, style_masks=[mask(40, 40, dtype=dtype)]))
    from_alpha = pixels(client.stylize(CONTENT, [with_alpha(style, alpha)], SEEDED))
    assert np.allclose(explicit, from_alpha, atol=1e-6)
    opaque = pixels(client.stylize(CONTENT, [with_alpha(style, mask(40, 40, right=1.0))], SEEDED))
    assert np.array_equal(opaque, pixels(client.stylize(CONTENT, [style], SEEDED)))
    assert not np.allclose(opaque, from_alpha, atol=1e-3)


def test_masks_are_part_of_the_style_cache_key(client):
    style = rgb_image(40, 40, seed=11)  # a style no other test uses
    runs = [None, [mask(40, 40)], [mask(40, 40, left=0.0, right=1.0)], [mask(40, 40)]]
    misses = []
    for style_masks in runs:
        client.stylize(CONTENT, [style], SEEDED, style_masks=style_masks)
        misses.append(client.status().style_cache["misses"])
    # Each new mask computes its own targets; the repeated one (the last) finds them.
    assert misses[1] > misses[0] and misses[2] > misses[1] and misses[3] == misses[2]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"regions": [mask(40, 40), None]}, r"regions\[0\]\) is 40×40 but must be the size of the content, 48×40"),
        ({"style_masks": [None, mask(40, 40)]},
         r"style_masks\[1\]\) is 40×40 but must be the size of style image 1, 24×32"),
        ({"regions": [mask(40, 48, channels=3), None]}, r"regions\[0\]\) must have 1 channel"),
        ({"regions": [mask(40, 48)]}, r"regions needs one mask \(or None\) per style image: 2, got 1"),
        ({"style_masks": [None, None, mask(40, 40)]},
         r"style_masks needs one mask \(or None\) per style image: 2, got 3"),
        ({"regions": [mask(40, 48), None], "settings": {**SEEDED, "style_layer_sources": [1, 1, 2, 2, 2]}},
         r"regions: .* cannot be combined with settings.style_layer_sources"),
    ],
)
def test_a_bad_mask_is_an_invalid_request_naming_it(daemon, client, options, match):
    settings = options.pop("settings", SEEDED)
    with pytest.raises(DaemonJobError, match=match) as raised:
        client.stylize(CONTENT, STYLES, settings, **options)
    assert raised.value.code == ErrorCode.INVALID_REQUEST.value
    still_serving(daemon)


def test_a_mask_of_the_wrong_dtype_or_a_missing_style_is_refused_on_the_wire(daemon, client):
    """What the client cannot send through its arguments: a mask entry with a bad dtype, or for a style
    that does not exist."""
    from daemon.wire.messages import MessageType

    entries = [{"role": "content", "width": 8, "height": 8, "channels": 3, "dtype": "u8"},
               {"role": "style", "width": 8, "height": 8, "channels": 3, "dtype": "u8"}]
    for extra, match in (({"role": "region", "width": 8, "height": 8, "channels": 1, "dtype": "f64", "style": 0},
                          r"images\[2\].dtype must be one of"),
                         ({"role": "region", "width": 8, "height": 8, "channels": 1, "dtype": "u8", "style": 1},
                          r"images\[2\] \(regions\[1\]\): there are only 1 style images"),
                         ({"role": "style_mask", "width": 8, "height": 8, "channels": 1, "dtype": "u8"},
                          r"images\[2\].style must be an integer")):
        client._send(MessageType.SUBMIT, {"images": [*entries, extra]}, [bytes(192), bytes(192), bytes(64)])
        reply = client._receive(5)
        assert reply is not None and reply.type is MessageType.ERROR, reply
        assert reply.body["code"] == "invalid_request"
        import re

        assert re.search(match, reply.body["message"]), reply.body["message"]
    still_serving(daemon)
