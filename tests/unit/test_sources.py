"""Collect: sources are read with provenance; unreadable ones fail with the file named."""

import hashlib

import pandas as pd
import pytest

from panelcast.data.sources import (
    SourceError,
    parse_table,
    provenance,
    read_source,
    source_format,
)


def test_package_source_is_the_real_table():
    raw = read_source("package://plotnine/data/txhousing.csv")
    frame = parse_table(raw)
    assert raw.package_version
    assert frame.shape == (8602, 9)
    assert frame["city"].nunique() == 46
    rec = provenance(raw, frame, "n", "l")
    assert rec["source"]["sha256"] == hashlib.sha256(raw.data).hexdigest()


def test_unknown_package_file():
    with pytest.raises(SourceError, match="not a file of plotnine"):
        read_source("package://plotnine/data/nope.csv")
    with pytest.raises(SourceError, match="not installed"):
        read_source("package://no-such-dist-xyz/data.csv")


def test_local_csv_and_parquet_agree(tmp_path, panel_frame):
    panel_frame.to_csv(tmp_path / "t.csv", index=False)
    panel_frame.to_parquet(tmp_path / "t.parquet", index=False)
    a = parse_table(read_source(str(tmp_path / "t.csv")))
    b = parse_table(read_source(str(tmp_path / "t.parquet")))
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_fsspec_file_url(tmp_path, panel_frame):
    panel_frame.to_csv(tmp_path / "t.csv", index=False)
    frame = parse_table(read_source(f"file://{tmp_path}/t.csv"))
    assert len(frame) == len(panel_frame)


@pytest.mark.parametrize(
    "name,content,fragment",
    [
        ("empty.csv", b"", "empty"),
        ("header.csv", b"city,year,month\n", "no rows"),
        ("trunc.csv", b"city,year,month\nA,2000,1\nA,20", "truncated"),
        ("semi.csv", b"city;year;month\nA;2000;1\n", "semicolon-separated"),
        ("latin.csv", "city,year\nSão Paulo,2000\n".encode("latin-1"), "not UTF-8"),
        ("fake.parquet", b"city,year\nA,1\n", "not a readable Parquet"),
    ],
)
def test_bad_files_name_the_file(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError, match=fragment) as info:
        parse_table(read_source(str(path)))
    assert name in str(info.value)


def test_missing_file_and_unreachable_url(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        read_source(str(tmp_path / "absent.csv"))
    with pytest.raises(SourceError, match="cannot be reached"):
        read_source("http://127.0.0.1:9/nothing.csv")


def test_provenance_of_a_package_source_has_no_path_of_this_machine():
    with read_source("package://plotnine/data/txhousing.csv") as raw:
        rec = provenance(raw, parse_table(raw), "n", "l")["source"]
    assert rec["location"] == "txhousing.csv" and rec["bytes"] == 523993
    assert "compression" not in rec and raw.workdir is None  # read in place, nothing copied


@pytest.mark.parametrize(
    "uri,fmt,expected",
    [
        ("a/t.csv", "auto", ("csv", None)),
        ("a/t.CSV.GZ", "auto", ("csv", "gzip")),
        ("https://h/t.parquet?x=1", "auto", ("parquet", None)),
        ("a/t.data.gz", "csv", ("csv", "gzip")),
    ],
)
def test_the_format_and_compression_come_from_the_name(uri, fmt, expected):
    assert source_format(uri, fmt) == expected


def test_a_name_without_a_known_suffix_needs_source_format():
    with pytest.raises(SourceError, match="cannot tell the format"):
        source_format("a/t.data")
