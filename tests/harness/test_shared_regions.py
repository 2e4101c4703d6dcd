"""Shared regions: a call's and a reply's large buffers travel through a sealed shared
memory file (``isolation.SharedRegion``), the pipes carrying the rest. Each test fails on
a planted bug: the region left unsealed (a worker could resize it under the grading
process), a buffer placed past the region's end, offsets read without a bounds check,
a reply's arrays not taken from the region."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from xentcheck.harness.adapters import isolation, open_adapter
from xentcheck.harness.adapters.isolation import (
    IN_PIPE,
    ProtocolError,
    SharedRegion,
    receive_message,
    send_message,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kept_adapters.py"
pytestmark = pytest.mark.skipif(SharedRegion.create() is None,
                                reason="no memfd_create with sealing (not Linux)")


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the buffers the grading process copies out of a region."""
    sizes: list[int] = []
    take = SharedRegion.take

    def counted(self: SharedRegion, offset: int, size: int) -> bytearray:
        sizes.append(size)
        return take(self, offset, size)

    monkeypatch.setattr(SharedRegion, "take", counted)
    return sizes


def test_large_buffers_cross_in_the_regions(taken: list[int]) -> None:
    z = np.random.default_rng(0).standard_normal((64, 4096))
    with open_adapter(f"{FIXTURES}:Echo") as handle:
        out = handle.call("cross_entropy", z, np.abs(z))  # two 2 MB inputs
        small = handle.call("logsumexp", z[:2, :8].copy())
    assert out.ok and small.ok
    np.testing.assert_array_equal(out.value, (z * np.abs(z)).sum(axis=1))
    np.testing.assert_array_equal(small.value, z[:2, :8].sum(axis=1))
    assert taken == []  # replies of 512 bytes and 16: through the pipe
    with open_adapter(f"{FIXTURES}:Echo") as handle:
        grown = handle.call("softmax", z)  # a 2 MB reply
    np.testing.assert_array_equal(grown.value, z + 1 - 1)
    assert taken == [z.nbytes]


def test_what_does_not_fit_goes_through_the_pipe(monkeypatch, taken: list[int]) -> None:
    monkeypatch.setattr(isolation, "REGION_BYTES", 3 << 20)  # one 2 MB array, not two
    z = np.random.default_rng(1).standard_normal((64, 4096))
    y = np.abs(z)
    sizes: list[list[int]] = []
    parts = isolation._message_parts

    def offsets(obj: object, region: object = None) -> list:
        out = parts(obj, region)
        sizes.append([len(bytes(p)) for p in out])
        return out

    monkeypatch.setattr(isolation, "_message_parts", offsets)
    with open_adapter(f"{FIXTURES}:Echo") as handle:
        out = handle.call("cross_entropy", z, y)
        both = handle.call("softmax", np.concatenate([z, z]))  # 4 MB: the pipe, both ways
    np.testing.assert_array_equal(out.value, (z * y).sum(axis=1))
    np.testing.assert_array_equal(both.value, np.concatenate([z, z]) + 1 - 1)
    assert sum(sizes[-2]) > z.nbytes > 0  # the call: one array in the pipe
    assert sum(sizes[-2]) < 2 * z.nbytes  # and one in the region
    assert sum(sizes[-1]) > 2 * z.nbytes  # the 4 MB one: in the pipe
    assert taken == []


def test_a_worker_cannot_resize_a_region() -> None:
    with open_adapter(f"{FIXTURES}:Probe") as handle:
        out = handle.call("logsumexp", np.zeros((4, 3)))
    assert out.ok, out.faults
    assert out.value[:2].tolist() == [0.0, 0.0]  # two regions found, neither resized


def test_without_regions_the_pipes_carry_everything(monkeypatch, taken) -> None:
    monkeypatch.setattr(SharedRegion, "create", classmethod(lambda cls: None))
    z = np.random.default_rng(2).standard_normal((64, 4096))
    with open_adapter(f"{FIXTURES}:Echo") as handle:
        out = handle.call("softmax", z)
        probe = open_adapter(f"{FIXTURES}:Probe")
        regions = probe.call("logsumexp", np.zeros((4, 3)))
        probe.close()
    np.testing.assert_array_equal(out.value, z + 1 - 1)
    assert regions.value.tolist() == [-1.0] * 4 and taken == []


def test_offsets_outside_the_region_are_refused() -> None:
    region, fd = SharedRegion.create()
    os.close(fd)
    assert region.take(region.size - 8, 8) == bytearray(8)
    for offset, size in [(region.size - 8, 9), (region.size + 1, 0), (IN_PIPE - 1, 2)]:
        with pytest.raises(ProtocolError, match="region"):
            region.take(offset, size)


def test_a_message_round_trip_through_a_region() -> None:
    region, fd = SharedRegion.create()
    os.close(fd)
    arrays = [np.arange(100_000, dtype=np.float32), np.ones(10), np.arange(70_000.0)]
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb", buffering=0) as writer:
        thread = threading.Thread(target=send_message, args=(writer, arrays, region))
        thread.start()
        back = receive_message(reader, region)
        thread.join()
    for a, b in zip(arrays, back, strict=True):
        np.testing.assert_array_equal(a, b)
        assert b.flags.writeable
