"""The service's request and response formats, and its client errors.

Two request formats carry the same rows in the source schema (the segment column, the
time columns of ``problem.time``, the target and the exogenous columns; a single series
may omit its ``series`` column):

- ``POST /predict``: ``{"rows": [{"city": ..., "year": ..., ...}, ...]}`` and/or
  ``{"segments": ["Austin", ...]}`` (stored history only);
- ``POST /v2/models/panelcast/infer`` (Open Inference Protocol v2, ``content_type: pd``):
  one named input per column, ``{"name": "city", "datatype": "BYTES", "shape": [n],
  "data": [...]}``; an input naming only the segment column asks for stored history.

Every client error is a :class:`ClientError`: a status (400 unreadable request, 404
unknown segment, 413 too large, 422 rows that break the data contract) and details,
each naming the field, the rule and the offending value (echoed values cut at 80
characters). The body is JSON: ``{"error": message, "details": [...]}``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import MAX_SHOWN
from ..data.contract import Failure

#: Bytes allowed per row of ``serve.max_rows`` before the body is even parsed.
BYTES_PER_ROW = 1024
#: Values a row may hold (a nested object or list is a protocol error).
SCALARS = (str, int, float, bool, type(None))
#: Open Inference Protocol data types and the Python values each accepts (None: missing).
DATATYPES: dict[str, tuple[type, ...]] = {
    "BYTES": (str,),
    "BOOL": (bool,),
    **{t: (int,) for t in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32")},
    "UINT64": (int,),
    **{t: (int, float) for t in ("FP16", "FP32", "FP64")},
}
#: The contract's column types as Open Inference Protocol data types.
CONTRACT_DATATYPE = {
    "string": "BYTES",
    "integer": "INT64",
    "number": "FP64",
    "datetime": "BYTES",
}


class ClientError(Exception):
    """A request the service cannot answer, and why (status, field, rule, value)."""

    def __init__(self, status: int, message: str, details: list[dict] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []

    def body(self) -> bytes:
        return dumps({"error": self.message, "status": self.status, "details": self.details})


def detail(field: str, rule: str, value: Any = None, message: str | None = None) -> dict:
    """One problem: the field (a JSON path or a column), the rule broken, the value."""
    out = {"field": field, "rule": rule, "value": show(value)}
    if message:
        out["message"] = message
    return out


def show(value: Any) -> Any:
    """A value safe to echo: text cut at 80 characters, containers summarised."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        return value if len(value) <= MAX_SHOWN else value[: MAX_SHOWN - 3] + "..."
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        text = str(value) if abs(value) < 10**30 else f"{value:.3e}"
        return value if len(text) <= 30 else show(text)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [show(v) for v in list(value)[:5]]
    return show(repr(value))


def dumps(obj: Any) -> bytes:
    """Compact JSON (the caller turns NaN into None)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


# --------------------------------------------------------------------------- parsing


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (send null for a missing value)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is too large for a 64-bit float")
    return value


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > 308:
        raise ValueError(f"number {text[:40]}... is too large for a 64-bit float")
    return int(text)


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite, parse_int=_integer)


def parse_json(body: bytes) -> Any:
    """The request body as JSON; 400 for anything else (NaN, Infinity, overflowing floats)."""
    if not body:
        raise ClientError(400, "the request body is empty; send a JSON object.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientError(
            400,
            f"the request body is not UTF-8 text (byte {body[exc.start]:#x} at {exc.start}).",
            [detail("$", "utf-8", body[max(exc.start - 10, 0) : exc.start + 10].hex())],
        ) from None
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        message = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise ClientError(
            400,
            f"the request body is not valid JSON: {show(message)}",
            [detail("$", "json", text[:MAX_SHOWN])],
        ) from None


def _expect_object(obj: Any, where: str) -> dict:
    if not isinstance(obj, dict):
        raise ClientError(
            400,
            f"{where} must be a JSON object, got {type_name(obj)}.",
            [detail(where, "type", obj, "expected an object")],
        )
    return obj


def type_name(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _check_size(n: int, max_rows: int, field: str) -> None:
    if n > max_rows:
        raise ClientError(
            413,
            f"{field} holds {n} items; the service takes at most serve.max_rows = {max_rows}.",
            [detail(field, "max_rows", n)],
        )


def _segments(value: Any, max_rows: int, field: str) -> list[str]:
    if not isinstance(value, list):
        raise ClientError(
            400, f"{field} must be a list of segment names.", [detail(field, "type", value)]
        )
    _check_size(len(value), max_rows, field)
    for i, name in enumerate(value):
        if not isinstance(name, str):
            raise ClientError(
                400,
                f"{field}[{i}] must be a segment name (a string), got {type_name(name)}.",
                [detail(f"{field}[{i}]", "type", name)],
            )
    return value


def _rows(value: Any, max_rows: int, field: str) -> list[dict]:
    if not isinstance(value, list):
        raise ClientError(
            400,
            f"{field} must be a list of rows (objects in the source schema).",
            [detail(field, "type", value)],
        )
    _check_size(len(value), max_rows, field)
    for i, row in enumerate(value):
        if not isinstance(row, dict):
            raise ClientError(
                400,
                f"{field}[{i}] must be an object (one row), got {type_name(row)}.",
                [detail(f"{field}[{i}]", "type", row)],
            )
        for key, v in row.items():
            if not isinstance(v, SCALARS):
                raise ClientError(
                    400,
                    f"{field}[{i}].{show(key)} must be a single value, got {type_name(v)}.",
                    [detail(f"{field}[{i}].{key}", "scalar", v)],
                )
    return value


def predict_request(obj: Any, max_rows: int) -> tuple[list[dict], list[str]]:
    """``rows`` and ``segments`` of a ``/predict`` body."""
    obj = _expect_object(obj, "$")
    extra = [k for k in obj if k not in ("rows", "segments")]
    if extra:
        raise ClientError(
            400,
            f"unknown field(s) {show(extra)}; a request has 'rows' and/or 'segments'.",
            [detail(str(k), "unknown_field", k) for k in extra[:5]],
        )
    if "rows" not in obj and "segments" not in obj:
        raise ClientError(
            400,
            "a request needs 'rows' (rows in the source schema) or 'segments' (names).",
            [detail("rows", "required")],
        )
    rows = _rows(obj["rows"], max_rows, "rows") if "rows" in obj else []
    segments = _segments(obj["segments"], max_rows, "segments") if "segments" in obj else []
    _check_size(len(rows) + len(segments), max_rows, "rows+segments")
    if not rows and not segments:
        raise ClientError(
            422,
            "nothing to forecast: 'rows' and 'segments' are empty.",
            [detail("rows", "min_rows", 0)],
        )
    return rows, segments


def infer_request(
    obj: Any, max_rows: int, segment: str
) -> tuple[list[dict], list[str], str | None]:
    """Rows (or segments) and the id of an Open Inference Protocol v2 request."""
    obj = _expect_object(obj, "$")
    extra = [k for k in obj if k not in ("id", "inputs", "parameters", "outputs")]
    if extra:
        raise ClientError(
            400,
            f"unknown field(s) {show(extra)} in an inference request.",
            [detail(str(k), "unknown_field", k) for k in extra[:5]],
        )
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, str):
        raise ClientError(400, "'id' must be a string.", [detail("id", "type", rid)])
    params = obj.get("parameters")
    if params is not None:
        params = _expect_object(params, "parameters")
        ctype = params.get("content_type", "pd")
        if ctype != "pd":
            raise ClientError(
                400,
                f"parameters.content_type must be 'pd' (named columns), got {show(ctype)}.",
                [detail("parameters.content_type", "allowed", ctype)],
            )
    if "outputs" in obj and not isinstance(obj["outputs"], list):
        raise ClientError(400, "'outputs' must be a list.", [detail("outputs", "type")])
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ClientError(
            400,
            "'inputs' must be a non-empty list of named columns.",
            [detail("inputs", "required" if inputs is None else "type", inputs)],
        )
    columns: dict[str, list] = {}
    length = None
    for i, item in enumerate(inputs):
        where = f"inputs[{i}]"
        item = _expect_object(item, where)
        unknown = [k for k in item if k not in ("name", "datatype", "shape", "data", "parameters")]
        if unknown:
            raise ClientError(
                400,
                f"{where}: unknown field(s) {show(unknown)}.",
                [detail(f"{where}.{k}", "unknown_field", k) for k in unknown[:5]],
            )
        name, dtype, shape, data = (item.get(k) for k in ("name", "datatype", "shape", "data"))
        if not isinstance(name, str) or not name:
            raise ClientError(
                400, f"{where}.name must be a column name.", [detail(f"{where}.name", "type", name)]
            )
        if name in columns:
            raise ClientError(
                400,
                f"input {show(name)} is given twice.",
                [detail(f"{where}.name", "unique", name)],
            )
        if dtype not in DATATYPES:
            raise ClientError(
                400,
                f"{where}.datatype must be one of {sorted(DATATYPES)}, got {show(dtype)}.",
                [detail(f"{where}.datatype", "allowed", dtype)],
            )
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 2
            or not all(type(s) is int and s >= 0 for s in shape)
            or (len(shape) == 2 and shape[1] != 1)
        ):
            raise ClientError(
                400,
                f"{where}.shape must be [n] or [n, 1], got {show(shape)}.",
                [detail(f"{where}.shape", "shape", shape)],
            )
        _check_size(shape[0], max_rows, f"{where}.shape")
        if not isinstance(data, list):
            raise ClientError(
                400, f"{where}.data must be a list.", [detail(f"{where}.data", "type", data)]
            )
        if len(shape) == 2 and all(isinstance(v, list) and len(v) == 1 for v in data):
            data = [v[0] for v in data]
        if len(data) != shape[0]:
            raise ClientError(
                400,
                f"{where}.data holds {len(data)} values but shape says {shape[0]}.",
                [detail(f"{where}.data", "shape", len(data))],
            )
        accepted = DATATYPES[dtype]
        for j, v in enumerate(data):
            ok = v is None or (
                isinstance(v, accepted) and (dtype == "BOOL" or not isinstance(v, bool))
            )
            if not ok:
                raise ClientError(
                    400,
                    f"{where}.data[{j}] is {type_name(v)}, not a {dtype} value.",
                    [detail(f"{where}.data[{j}]", "datatype", v, f"expected {dtype}")],
                )
        if length is not None and len(data) != length:
            raise ClientError(
                400,
                f"every input must hold as many values: {where} has {len(data)}, the first "
                f"{length}.",
                [detail(f"{where}.shape", "same_length", len(data))],
            )
        length = len(data)
        columns[name] = data
    if list(columns) == [segment]:  # names only (a null or a number is not a name: 400)
        return [], _segments(list(columns[segment]), max_rows, "inputs[0].data"), rid
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    if not rows:
        raise ClientError(
            422, "nothing to forecast: the inputs hold no rows.", [detail("inputs", "min_rows", 0)]
        )
    return rows, [], rid


def records_frame(rows: list[dict]) -> pd.DataFrame:
    """JSON rows as a DataFrame for the data contract (a missing key is a missing value;
    column types as pandas infers them, as for a file)."""
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            names.setdefault(key, None)
    data = {}
    for name in names:
        values = [row.get(name) for row in rows]
        if any(isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2**63 for v in values):
            values = [
                float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values
            ]
        data[name] = values
    return pd.DataFrame(data, index=pd.RangeIndex(len(rows)))


def contract_details(failures: list[Failure]) -> list[dict]:
    """Contract failures as response details (column, rule, values, count, message)."""
    return [
        {
            "field": f.column if f.column is not None else "table",
            "rule": f.rule,
            "value": [show(v) for v in f.examples[:5]],
            "count": int(f.count),
            "message": f.message if len(f.message) <= 300 else f.message[:297] + "...",
        }
        for f in failures
    ]
