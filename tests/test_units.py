import pytest

from fogsim.errors import FogsimError
from fogsim.units import format_bytes, parse_bytes


@pytest.mark.parametrize("text, expected", [
    ("512KiB", 512 * 1024), ("1MiB", 1024**2), ("1.5 MB", 1_500_000), ("2GiB", 2 * 1024**3),
    ("1000", 1000), ("64B", 64), ("1kb", 1000), (4096, 4096),
])
def test_parse_bytes_accepts_common_sizes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["-1MiB", "12XB", "0", "", "MiB", "0.1", "1 2MiB", True])
def test_parse_bytes_rejects_with_a_hint(text):
    with pytest.raises(FogsimError, match="budget .*(512KiB|1 byte)"):
        parse_bytes(text, what="budget")


def test_format_bytes():
    assert format_bytes(96) == "96 B"
    assert format_bytes(1536) == "1.50 KiB"
    assert format_bytes(3 * 1024**2) == "3.00 MiB"
    assert format_bytes(300 * 1024**2) == "300 MiB"
