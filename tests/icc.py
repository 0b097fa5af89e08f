"""A minimal matrix/TRC RGB ICC profile (v2) for tests: Adobe-RGB-like primaries, gamma 2.2."""

from __future__ import annotations

import struct

# Adobe RGB (1998) colorants adapted to D50, the ICC's connection space white.
ADOBE_RGB_COLORANTS = {
    b"rXYZ": (0.6097, 0.3111, 0.0195),
    b"gXYZ": (0.2053, 0.6257, 0.0609),
    b"bXYZ": (0.1492, 0.0632, 0.7446),
}
D50 = (0.9642, 1.0, 0.8249)


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(values: tuple[float, float, float]) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15f16(v) for v in values)


def _gamma_curve(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"


def adobe_rgb_like_profile(gamma: float = 2.2) -> bytes:
    curve = _gamma_curve(gamma)
    tags = [(b"wtpt", _xyz(D50))] + [(sig, _xyz(v)) for sig, v in ADOBE_RGB_COLORANTS.items()]
    tags += [(b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = [], b""
    for signature, body in tags:
        table.append(struct.pack(">4sII", signature, offset + len(data), len(body)))
        data += body + b"\0" * (-len(body) % 4)
    body = struct.pack(">I", len(tags)) + b"".join(table) + data
    header = bytearray(128)
    struct.pack_into(">I", header, 0, 128 + len(body))
    header[8:12] = bytes([2, 0x10, 0, 0])
    header[12:24] = b"mntrRGB XYZ "
    header[36:40] = b"acsp"
    header[68:80] = b"".join(_s15f16(v) for v in D50)
    return bytes(header) + body
