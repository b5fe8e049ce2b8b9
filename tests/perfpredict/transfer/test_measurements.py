"""The measurements CSV: bad files are one-line errors, shots timed beside the beacon are normalised."""

from __future__ import annotations

import pytest

from perfpredict.errors import PerfPredictError
from perfpredict.transfer import TransferError, read_measurements, write_measurements


def test_bad_measurement_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,ms\nx,1\n")
    with pytest.raises(PerfPredictError, match="missing column.*latency_ms"):
        read_measurements(bad)
    bad.write_text("model,latency_ms\nx,-3\n")
    with pytest.raises(PerfPredictError, match="positive"):
        read_measurements(bad)


def test_shots_timed_beside_the_beacon_are_scaled_to_its_median(tmp_path):
    # two shots measured while the machine ran 1.5x slower (their beacon 1.5x too) come back to the speed of the
    # others; a measurement without a beacon stays as it is
    from perfpredict.transfer import Measurement, beacon_normalised

    ms = [Measurement("a", None, 2.0, 1.0), Measurement("b", None, 4.0, 1.0), Measurement("c", None, 3.0, 1.5),
          Measurement("d", None, 6.0, 1.5), Measurement("e", None, 1.0, 1.0), Measurement("f", None, 9.0)]
    out = beacon_normalised(ms)
    assert [m.latency_ms for m in out] == pytest.approx([2.0, 4.0, 2.0, 4.0, 1.0, 9.0])
    assert beacon_normalised(ms[-1:]) == ms[-1:]
    # the CSV keeps the latencies as timed and the beacon beside them; a CSV without the column reads as before
    back = read_measurements(write_measurements(tmp_path / "m.csv", ms))
    assert [(b.latency_ms, b.beacon_ms) for b in back] == [(m.latency_ms, m.beacon_ms) for m in ms]
    (tmp_path / "old.csv").write_text("model,latency_ms\na,2.0\n")
    assert read_measurements(tmp_path / "old.csv")[0].beacon_ms is None
    (tmp_path / "bad.csv").write_text("model,latency_ms,beacon_ms\na,2.0,-1\n")
    with pytest.raises(TransferError, match="beacon_ms must be a positive"):
        read_measurements(tmp_path / "bad.csv")
