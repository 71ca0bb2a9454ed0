"""The service's fast path gives exactly what ``next_period_features`` and
``Forecaster.forecast`` give: same features, same forecasts, bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from panelcast.core.periods import SEGMENT_FEATURE
from panelcast.modelling.features import next_period_features
from panelcast.serving import compiled as compiled_module
from panelcast.serving.forecaster import RequestRowsError, UnknownSegmentError, merge_history
from panelcast.serving.protocol import records_frame

VALUES = ["sales", "volume", "median", "listings", "inventory"]


def random_request(fc, rng) -> tuple[pd.DataFrame | None, list[str]]:
    """Rows for 1-6 segments: stored periods overridden, later periods (with gaps), older
    periods, missing values; plus segments asked for their stored history only."""
    state = fc.state
    segs = list(rng.choice(fc.segments, size=int(rng.integers(1, 7)), replace=False))
    rows = []
    for s in segs:
        mine = state[state["city"] == s]
        last = int(mine["year"].max() * 12 + mine["month"].max() - 1) if len(mine) else 2015 * 12
        periods = set()
        for _ in range(int(rng.integers(0, 5))):
            kind = rng.random()
            if kind < 0.4:
                t = last - int(rng.integers(0, 30))  # override (or older than the window)
            elif kind < 0.8:
                t = last + int(rng.integers(1, 4))  # later periods
            else:
                t = last + int(rng.integers(10, 40))  # far later: most lags missing
            periods.add(t)
        for t in sorted(periods):
            row = {"city": s, "year": t // 12, "month": t % 12 + 1}
            for c in VALUES:
                r = rng.random()
                high = 100.0 if c == "inventory" else 1e4 if c == "sales" else 1e6
                row[c] = (
                    None
                    if r < 0.2
                    else float(rng.integers(0, int(high) // 2))
                    if r < 0.5
                    else float(rng.uniform(0, high))
                )
            rows.append(row)
    extra = [s for s in fc.segments if rng.random() < 2 / len(fc.segments)]
    if rows and rng.random() < 0.35:  # the commonest request: one row of one segment
        rows, extra = rows[-1:], []
    if not rows and not extra:
        extra = segs
    frame = pd.DataFrame(rows, columns=fc.metadata["input_schema"]) if rows else None
    if frame is not None:
        frame = frame.astype({c: float for c in VALUES})
    return frame, extra


def test_fast_path_equals_the_reference_on_random_requests(forecaster):
    fc, fast = forecaster, forecaster.fast
    rng = np.random.default_rng(7)
    p = fc.params
    for i in range(200):
        rows, extra = random_request(fc, rng)
        expected = fc.forecast(rows, extra)
        got = fc.forecast_fast(rows, extra)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
        # the features themselves, column by column
        wanted = set(extra) | (set(rows["city"]) if rows is not None else set())
        history = fc.state[fc.state["city"].isin(wanted)]
        if rows is not None:
            history = merge_history(history, rows, p)
        ref = next_period_features(history, p.problem, p.features, fc.segments)
        arrays = fast.rows_from_frame(rows) if rows is not None else None
        X = fast.feature_matrix(fast.prepare(arrays, [fast.index[s] for s in extra]))
        for j, name in enumerate(fast.features):
            col = ref[name]
            values = col.cat.codes.to_numpy(float) if name == SEGMENT_FEATURE else col
            assert np.array_equal(X[:, j], np.asarray(values, float), equal_nan=True), (i, name)


def test_every_segment_and_a_large_batch_match(forecaster):
    fc = forecaster
    expected = fc.forecast(segments=fc.segments)
    pd.testing.assert_frame_equal(
        fc.forecast_fast(segments=fc.segments), expected, check_exact=True
    )
    assert fc.fast.compiled is not None, "the deployed HistGradientBoosting model compiles"


@pytest.mark.parametrize("n", [1, 3, compiled_module.NUMPY_MAX_ROWS, 500])
def test_compiled_model_equals_predict_with_missing_values(forecaster, n):
    fast = forecaster.fast
    rng = np.random.default_rng(n)
    X = fast.feature_matrix(fast.prepare(None, list(range(len(fast.names)))))
    X = X[~np.isnan(X[:, fast.features.index("log_level")])]
    rows = X[rng.integers(0, len(X), n)].copy()
    holes = rng.random(rows.shape) < 0.15
    holes[:, fast.features.index("log_level")] = False
    holes[:, fast.features.index(SEGMENT_FEATURE)] = False
    rows[holes] = np.nan
    rows *= np.where(holes, 1, rng.uniform(0.9, 1.1, rows.shape))
    rows[:, fast.features.index(SEGMENT_FEATURE)] = X[rng.integers(0, len(X), n)][
        :, fast.features.index(SEGMENT_FEATURE)
    ]
    rows[:, fast.features.index("season_position")] = rng.integers(1, 13, n)
    expected = forecaster.model.predict(fast.as_frame(rows))
    assert np.array_equal(fast.compiled.predict(rows), expected, equal_nan=True)


@pytest.mark.parametrize("encoding", ["target_mean", "none"])
def test_compiled_model_reproduces_the_segment_encoder(forecaster, bundle, encoding):
    """The global model with its segment column encoded by target mean or dropped (the
    high-cardinality encodings) compiles, with model.predict's digits."""
    from sklearn.base import clone

    from panelcast.modelling.features import build_features

    fast, p = forecaster.fast, forecaster.params
    features, _ = build_features(bundle["table"], p.problem, p.features, p.windows)
    train = features[features["window"].eq("train") & features["target"].notna()]
    model = clone(forecaster.model).set_params(regressor__segment__encoding=encoding)
    model.fit(train[fast.features], train["target"])
    compiled = compiled_module.CompiledModel.from_model(
        model, fast.features, {SEGMENT_FEATURE: fast.names}
    )
    assert compiled is not None and compiled.segment_step is not None
    X = fast.feature_matrix(fast.prepare(None, list(range(len(fast.names)))))
    X = X[~np.isnan(X[:, fast.features.index("log_level")])]
    for n in (1, 5, compiled_module.NUMPY_MAX_ROWS + 1, len(X)):
        expected = model.predict(fast.as_frame(X[:n]))
        assert np.array_equal(compiled.predict(X[:n]), expected, equal_nan=True), n


# --------------------------------------------------------------------------- request rows

names = st.sampled_from(["Austin", "Dallas", "Abilene", "Atlantis", "", "austin"])
numbers = st.one_of(
    st.none(),
    st.integers(-10, 10**6),
    st.floats(-10, 1e7, allow_nan=False),
    st.booleans(),
    st.text(max_size=3),
    st.integers(2**53 - 2, 2**64),
    st.floats(1e14, 1e300),  # past the contract's magnitude guard (max_abs)
)
years = st.one_of(st.integers(1985, 2030), st.floats(1999, 2016), st.none(), st.text(max_size=2))
months = st.one_of(st.integers(-1, 14), st.floats(0, 13), st.none(), st.booleans())


@st.composite
def request_rows(draw):
    n = draw(st.integers(1, 4))
    rows = []
    for _ in range(n):
        row = {"city": draw(names), "year": draw(years), "month": draw(months)}
        for c in VALUES:
            row[c] = draw(numbers)
        if draw(st.booleans()) and draw(st.booleans()):
            row.pop(draw(st.sampled_from(sorted(row))))
        if draw(st.integers(0, 9)) == 0:
            row["extra"] = 1
        rows.append(row)
    if draw(st.booleans()):
        rows.append(dict(rows[0]))  # a duplicate key
    return rows


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_rows())
def test_plain_rows_shortcut_agrees_with_the_contract(forecaster, rows):
    """Rows the fast reader accepts pass the data contract and give the same arrays."""
    fast = forecaster.fast
    arrays = fast.rows_from_records(rows)
    frame = records_frame(rows)
    try:
        forecaster.validate_rows(frame)
        passed = True
    except (RequestRowsError, UnknownSegmentError):
        passed = False
    except TypeError:  # panelcast.data.contract.check on duplicate keys with missing parts
        passed = False
    if arrays is None:
        return
    assert passed, rows
    ref = fast.rows_from_frame(frame)
    assert np.array_equal(arrays.seg, ref.seg)
    assert np.array_equal(arrays.t, ref.t)
    assert np.array_equal(arrays.values, ref.values, equal_nan=True)


def test_plain_rows_shortcut_takes_ordinary_rows(forecaster):
    row = {
        "city": "Austin",
        "year": 2015,
        "month": 8,
        "sales": 3000,
        "volume": None,
        "median": 250000.5,
        "listings": 8000,
        "inventory": 2.5,
    }
    assert forecaster.fast.rows_from_records([row]) is not None
