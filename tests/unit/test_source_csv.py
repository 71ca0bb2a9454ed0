"""CSV sources: checked in chunks, read with pandas' types, gzip and look-alikes, reproducible."""

from __future__ import annotations

import gzip
import hashlib
import io

import pandas as pd
import pytest

from panelcast.core.io import write_parquet
from panelcast.data import sources
from panelcast.data.sources import SourceError, parse_table, provenance, read_source

TABLE = b"city,year,month,sales\nA,2000,1,10\nA,2000,2,12.5\nB,2000,1,\n"


def read(path, **kwargs) -> pd.DataFrame:
    with read_source(str(path)) as raw:
        return parse_table(raw, **kwargs)


def error_of(path, **kwargs) -> str:
    with pytest.raises(SourceError) as info:
        read(path, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------- final newline


def test_a_last_line_cut_inside_its_last_field_is_refused(tmp_path):
    path = tmp_path / "cut.csv"
    path.write_bytes(TABLE + b"B,2000,2,13")  # the field count is intact: only the \n is gone
    message = error_of(path)
    assert message.startswith(f"source {str(path)!r}")
    assert (
        "does not end with a newline: the last line may be truncated: 'B,2000,2,13'; if the "
        "file is complete, add the final newline or set source.require_final_newline: false."
    ) in message
    frame = read(path, require_final_newline=False)
    assert frame.iloc[-1].tolist() == ["B", 2000, 2, 13.0]


def test_the_last_line_is_shown_cut_to_80_characters(tmp_path):
    path = tmp_path / "long.csv"
    path.write_bytes(b"a,b\n1,2\n" + b"x" * 200 + b",y")
    message = error_of(path)
    assert repr("x" * 80) in message and "x" * 81 not in message


def test_a_last_line_with_missing_fields_names_the_line_and_the_counts(tmp_path):
    path = tmp_path / "trunc.csv"
    path.write_bytes(TABLE + b"B,20")
    message = error_of(path, require_final_newline=False)
    assert "the last line (line 5) is truncated: 2 fields where the header has 4: 'B,20'" in message


def test_a_header_only_file_without_newline_has_no_rows(tmp_path):
    path = tmp_path / "header.csv"
    path.write_bytes(b"city,year,month")
    assert "but no rows" in error_of(path)


# --------------------------------------------------------------------------- chunked checks


def test_invalid_utf8_is_found_beyond_the_first_chunk_at_its_offset(tmp_path):
    head = b"city,year\n" + b"Abilene,2000\n" * (sources.CHUNK // 13 + 100)
    path = tmp_path / "latin.csv"
    path.write_bytes(head + "São Paulo,2000\n".encode("latin-1"))
    message = error_of(path)
    assert f"not UTF-8 text: byte 0xe3 at offset {len(head) + 1}" in message


def test_a_character_split_across_chunks_is_valid(tmp_path):
    head = b"city,year\n"
    filler = b"x" * (sources.CHUNK - len(head) - 1) + b",2000\n"  # puts 'é' on the border
    path = tmp_path / "ok.csv"
    path.write_bytes(head + filler[:-6] + "é".encode() + b",2000\n")
    assert sources.CHUNK - 1 == len(head) + len(filler[:-6])
    frame = read(path)
    assert frame["city"].iloc[0].endswith("é")


def test_a_header_longer_than_the_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_HEADER_BYTES", 100)
    path = tmp_path / "noline.csv"
    path.write_bytes(b"a," * 200)
    assert "the first line (header) is longer than 100 bytes" in error_of(path)


@pytest.mark.parametrize(
    "content,fragment",
    [
        (b"\ncity,year\nA,1\n", "the first line (header) is empty"),
        (b"city\tyear\nA\t1\n", "found a tab-separated header"),
        (b"city|year\nA|1\n", "found a pipe-separated header"),
        (b"a,b\n1,2\n3,4,5\n6,7\n", "malformed CSV: a line has 3 fields where the header has 2"),
    ],
)
def test_malformed_files_name_the_file_and_the_rule(tmp_path, content, fragment):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    message = error_of(path)
    assert fragment in message and "bad.csv" in message


# --------------------------------------------------------------------------- gzip and look-alikes


def test_a_gzip_csv_is_read_and_its_provenance_says_so(tmp_path):
    plain, packed = tmp_path / "t.csv", tmp_path / "t.csv.gz"
    plain.write_bytes(TABLE)
    packed.write_bytes(gzip.compress(TABLE, mtime=0))
    with read_source(str(packed), tmp_dir=tmp_path / "work") as raw:
        frame = parse_table(raw)
        record = provenance(raw, frame, "n", "l")
        assert raw.table_file.parent.parent == tmp_path / "work"
    pd.testing.assert_frame_equal(frame, read(plain))
    assert record["source"]["compression"] == "gzip"
    assert record["source"]["sha256"] == hashlib.sha256(packed.read_bytes()).hexdigest()
    assert record["source"]["bytes"] == packed.stat().st_size
    assert record["source"]["decompressed_bytes"] == len(TABLE)
    assert list((tmp_path / "work").iterdir()) == []
    assert "compression" not in provenance(read_source(str(plain)), frame, "n", "l")["source"]


def test_gzip_without_the_suffix_is_named_as_such(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(gzip.compress(TABLE))
    message = error_of(path)
    assert "is gzip-compressed (it starts with bytes 1f 8b)" in message and "t.csv" in message
    assert "not UTF-8" not in message and "'table.csv.gz'" in message


def test_a_gz_name_on_plain_text_and_a_broken_gzip_are_refused(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(TABLE)
    assert "the name ends in .gz but the file is not gzip-compressed" in error_of(path)
    path.write_bytes(gzip.compress(TABLE)[:-12])
    assert "not a valid gzip file: EOFError" in error_of(path)


def test_a_parquet_file_named_csv_is_named_as_such(tmp_path, panel_frame):
    path = tmp_path / "t.csv"
    panel_frame.to_parquet(path)
    message = error_of(path)
    assert "the file is a Parquet file (it starts with bytes 50 41 52 31)" in message
    assert "source.format: parquet" in message


# --------------------------------------------------------------------------- pandas' types


@pytest.mark.parametrize(
    "name,text",
    [
        ("iso_dates_stay_text", "a,b\n2015-01-01,1\n2015-02-01,2\n"),
        ("times_stay_text", "a,b\n12:00:00,1\n13:00:00,2\n"),
        ("integers_with_missing_become_float", "a,b\n1,\n2,3\n"),
        ("an_empty_column_is_float", "a,b\n,1\n,2\n"),
        ("booleans", "a,b\nTrue,false\nFALSE,true\n"),
        ("booleans_with_missing", "a,b\nTrue,1\n,2\n"),
        ("null_markers", 'a,b\nx,NA\nnan,None\nNULL,null\n"",n/a\n1,2\n'),
        ("mixed_text_and_numbers", "a,b\n1,x\n2.5,y\nfoo,z\n"),
        ("duplicate_and_empty_names", "a,a,,b\n1,2,3,4\n"),
        ("quoted_commas_and_newlines", 'a,b\n"x,y",1\n"two\nlines",2\n'),
        ("byte_order_mark", "\ufeffa,b\n1,2\n"),
        ("crlf", "a,b\r\n1,2\r\n3,4\r\n"),
        ("exponents_and_infinities", "a,b\n1e5,inf\n-2.5E-3,-inf\n"),
    ],
)
def test_types_and_missing_values_are_those_of_pandas(tmp_path, name, text):
    path = tmp_path / f"{name}.csv"
    path.write_bytes(text.encode())
    pd.testing.assert_frame_equal(read(path), pd.read_csv(path))


@pytest.mark.parametrize("late", ["2.5", "foo", ""])
def test_a_value_after_the_first_block_decides_the_type_as_in_pandas(tmp_path, late, monkeypatch):
    monkeypatch.setattr(sources, "BLOCK_BYTES", 1 << 14)
    rows = "\n".join(f"{i},{i % 7}" for i in range(sources.BLOCK_BYTES // 2))
    path = tmp_path / "late.csv"
    path.write_text(f"a,b\n{rows}\n{late},1\n")
    assert path.stat().st_size > 2 * sources.BLOCK_BYTES
    frame = read(path)
    reference = pd.read_csv(path)
    pd.testing.assert_frame_equal(frame, reference)
    assert frame["a"].dtype == {"2.5": "float64", "foo": reference["a"].dtype, "": "float64"}[late]


def test_many_late_surprises_fall_back_to_reading_every_block_first(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "BLOCK_BYTES", 1 << 12)
    lines = [f"{i},{i},{i},{i}" for i in range(5000)]
    lines[3000] = "1.5,x,True,2"  # three columns change type late
    path = tmp_path / "late.csv"
    path.write_text("a,b,c,d\n" + "\n".join(lines) + "\n")
    calls = []
    infer = sources._infer
    monkeypatch.setattr(sources, "_infer", lambda *a, **k: calls.append(k) or infer(*a, **k))
    monkeypatch.setattr(sources, "MAX_WIDENINGS", 2)
    pd.testing.assert_frame_equal(read(path), pd.read_csv(path))
    assert calls == [{"blocks": 1}, {"blocks": None}]


def test_the_real_table_reads_as_pandas_reads_it():
    with read_source("package://plotnine/data/txhousing.csv") as raw:
        frame = parse_table(raw)
        reference = pd.read_csv(io.BytesIO(raw.data))
    pd.testing.assert_frame_equal(frame, reference)


def test_the_snapshot_is_byte_reproducible(tmp_path, panel_frame):
    path = tmp_path / "t.csv"
    panel_frame.to_csv(path, index=False)
    outputs = []
    for i in range(2):
        out = tmp_path / f"s{i}.parquet"
        write_parquet(out, read(path))
        outputs.append(out.read_bytes())
    write_parquet(tmp_path / "pandas.parquet", pd.read_csv(path))
    assert outputs[0] == outputs[1] == (tmp_path / "pandas.parquet").read_bytes()


def test_a_file_changed_while_it_is_read_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(TABLE)
    raw = read_source(str(path))
    path.write_bytes(TABLE + b"C,2000,1,1\n")
    with pytest.raises(SourceError, match="the file changed while it was being read"):
        parse_table(raw)
