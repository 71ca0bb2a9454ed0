"""Property-based fuzzing of a real ``panelcast serve`` on loopback: thousands of malformed
bodies, never a 5xx, and the service still answers a good request correctly after."""

from __future__ import annotations

import http.client
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .bundle import GOOD, request

EXAMPLES = 2200
# One worker runs the whole module in order: the last test checks what the fuzzing test sent.
pytestmark = pytest.mark.xdist_group("serving-fuzz")

COLUMNS = ["city", "year", "month", "sales", "volume", "median", "listings", "inventory"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.text(max_size=20),
    st.text(min_size=81, max_size=200),
    st.sampled_from(["Austin", "Dallas", "Atlantis", "", "NaN", "2015", "Abilene\x00"]),
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
keys = st.one_of(st.sampled_from(COLUMNS), st.text(max_size=10))


@st.composite
def rows(draw):
    """Source-schema rows with wrong types, missing or extra fields, odd values."""
    out = []
    for _ in range(draw(st.integers(0, 4))):
        row = dict(GOOD)
        for _ in range(draw(st.integers(0, 4))):
            action = draw(st.integers(0, 9))
            if action == 0:
                row[draw(st.sampled_from(COLUMNS))] = draw(anything)
            elif action == 1 and row:
                row.pop(draw(st.sampled_from(sorted(row))))
            elif action == 2:
                row[draw(keys)] = draw(scalars)
            elif action >= 6:
                row[draw(st.sampled_from(COLUMNS[3:]))] = draw(
                    st.one_of(st.none(), st.floats(-10, 1e6, allow_nan=False))
                )
            else:
                row[draw(st.sampled_from(COLUMNS))] = draw(scalars)
        out.append(row)
    return out


@st.composite
def predict_bodies(draw):
    body: dict = {}
    if draw(st.integers(0, 4)):
        body["rows"] = draw(rows()) if draw(st.integers(0, 5)) else draw(anything)
    if draw(st.integers(0, 3)) == 0:
        body["segments"] = draw(
            st.one_of(
                st.lists(st.sampled_from(["Austin", "Atlantis", "Dallas", ""]), max_size=4),
                st.lists(scalars, max_size=3),
                anything,
            )
        )
    if draw(st.integers(0, 4)) == 0:
        body[draw(st.text(max_size=6))] = draw(anything)
    return "/predict", json.dumps(body).encode()


@st.composite
def infer_bodies(draw):
    n = draw(st.integers(0, 3))
    inputs = []
    for name in draw(st.lists(keys, max_size=9)):
        item = {
            "name": name,
            "datatype": draw(st.sampled_from(["BYTES", "INT64", "FP64", "FP32", "BOOL", "X"])),
            "shape": draw(
                st.one_of(
                    st.just([n]),
                    st.just([n, 1]),
                    st.lists(st.integers(-2, 5), max_size=3),
                    anything,
                )
            ),
            "data": draw(st.one_of(st.lists(scalars, min_size=n, max_size=n), anything)),
        }
        if draw(st.integers(0, 5)) == 0:
            item.pop(draw(st.sampled_from(sorted(item))))
        inputs.append(item)
    body = {"inputs": inputs if draw(st.integers(0, 6)) else draw(anything)}
    if draw(st.booleans()):
        body["parameters"] = draw(st.one_of(st.just({"content_type": "pd"}), anything))
    if draw(st.booleans()):
        body["id"] = draw(scalars)
    return "/v2/models/panelcast/infer", json.dumps(body).encode()


@st.composite
def raw_bodies(draw):
    """Bytes that are not (standard) JSON: NaN, Infinity, huge numbers, junk, truncation."""
    route = draw(st.sampled_from(["/predict", "/v2/models/panelcast/infer"]))
    good = json.dumps({"rows": [GOOD]})
    token = draw(
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, "-1e400", "1" * 400])
    )
    choice = draw(st.integers(0, 3))
    if choice == 0:
        text = good.replace("3000.0", token)
    elif choice == 1:
        text = good[: draw(st.integers(0, len(good) - 1))]
    elif choice == 2:
        return route, draw(st.binary(max_size=64))
    else:
        text = "[" * draw(st.integers(1, 5000))
    return route, text.encode()


bodies = st.one_of(
    predict_bodies(),
    predict_bodies(),
    infer_bodies(),
    raw_bodies(),
    anything.map(lambda v: ("/predict", json.dumps(v).encode())),
)


@pytest.fixture(scope="module")
def connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    yield conn
    conn.close()


def post(conn, route: str, body: bytes) -> tuple[int, bytes]:
    try:
        conn.request("POST", route, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    except (http.client.HTTPException, ConnectionError):
        conn.close()  # the server closed a connection it had answered: open another
        conn.request("POST", route, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()


SENT = {"n": 0, "by_status": {}}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
@given(bodies)
def test_no_body_gets_a_server_error(connection, case):
    route, body = case
    status, answer = post(connection, route, body)
    SENT["n"] += 1
    SENT["by_status"][status] = SENT["by_status"].get(status, 0) + 1
    assert status < 500, (route, body[:300], answer[:300])
    if status >= 400:
        parsed = json.loads(answer)
        assert "error" in parsed and isinstance(parsed["error"], str)


def test_fuzzing_sent_enough_and_the_service_still_answers(server, forecaster):
    assert SENT["n"] >= 2000, SENT
    assert set(SENT["by_status"]) - {200} and all(s < 500 for s in SENT["by_status"])
    status, body = request(server.url + "/predict", "POST", {"rows": [GOOD]})
    assert status == 200
    import pandas as pd

    frame = pd.DataFrame([GOOD]).astype({"volume": float})
    expected = forecaster.forecast(frame)
    assert body["forecasts"][0]["forecast"] == float(expected["forecast"].iloc[0])
    assert "unhandled error" not in server.log() and "Traceback" not in server.log()
    print(f"fuzz: {SENT['n']} bodies, answers by status {sorted(SENT['by_status'].items())}")
