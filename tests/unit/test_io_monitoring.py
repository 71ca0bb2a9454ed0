"""Atomic writes and what is monitored for drift."""

import json

import numpy as np
import pandas as pd
import pytest

from panelcast.core.io import atomic_write, clean_float, read_json, write_json
from panelcast.monitoring.reference import monitored_frame, steady_state


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"a": 1})

    def broken(tmp):
        tmp.write_text('{"a": 2, "half')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert read_json(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary left behind


def test_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"a": float("nan")})
    assert clean_float(float("nan")) is None and clean_float(1 / 3) == 0.333333


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="metrics.json"):
        read_json(bad)
    with pytest.raises(FileNotFoundError, match="absent.json"):
        read_json(tmp_path / "absent.json")


def test_monitored_frame_adds_target_and_prediction():
    rows = pd.DataFrame(
        {"lag_1": [0.1, 0.2], "segment": pd.Categorical(["A", "B"]), "target": [10.0, 20.0]}
    )
    frame, numeric, categorical = monitored_frame(rows, ["lag_1", "segment"], np.array([9.0, 21.0]))
    assert list(frame.columns) == ["lag_1", "segment", "target", "prediction"]
    assert numeric == ["lag_1", "target", "prediction"] and categorical == ["segment"]
    json.dumps(frame["segment"].tolist())  # plain strings


def test_steady_state_skips_each_segments_warm_up():
    rows = pd.DataFrame(
        {"city": ["A"] * 30 + ["B"] * 30, "t": list(range(30)) + list(range(10, 40))}
    )
    mask = steady_state(rows, "city", warmup=12)
    assert mask.sum() == 36
    assert not mask[(rows.city == "B") & (rows.t < 22)].any()
    # too little data past the warm-up: all rows are kept rather than a sliver
    assert steady_state(rows, "city", warmup=25).all()
