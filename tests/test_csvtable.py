"""CSV reading for the command line: the NumPy-only reader types every column as pandas does.

``fastbp.csvtable`` reads with pandas when it is installed and with the standard
library otherwise; both must give the same table (kinds, values, missing cells), so a
model trained from a CSV file is the same with or without pandas.
"""
import io

import numpy as np
import pytest

from fastbp import csvtable

TRICKY = (
    "id,x,flag,label,x,note,empty,mixed\n"
    "1,0.1,True,cat,1e-3,\"a, quoted\",,3\n"
    "\n"
    "2,-2.5e10,False,dog,NA,plain,,oops\n"
    "3,0.30000000000000004,true,NaN,7,,,\n"
    "4,1234567890123,FALSE,cat,-inf,null,,4.5\n"
)


def _tables(tmp_path, text):
    path = tmp_path / "data.csv"
    path.write_text(text, encoding="utf-8")
    plain = csvtable._read_plain(path)
    pytest.importorskip("pandas")
    return plain, csvtable._read_pandas(path)


def assert_same_table(a, b):
    assert a.columns == b.columns
    assert a.n_rows == b.n_rows
    for name in a.columns:
        assert a.kinds[name] == b.kinds[name], name
        np.testing.assert_array_equal(a.missing(name), b.missing(name), err_msg=name)
        if a.kinds[name] == "text":
            assert list(a.values[name]) == list(b.values[name]), name
        else:
            np.testing.assert_array_equal(a.values[name], b.values[name], err_msg=name)


def test_both_readers_type_columns_alike(tmp_path):
    plain, pandas_table = _tables(tmp_path, TRICKY)
    assert_same_table(plain, pandas_table)
    assert plain.columns == ["id", "x", "flag", "label", "x.1", "note", "empty", "mixed"]
    assert plain.kinds == {"id": "number", "x": "number", "flag": "bool", "label": "text",
                           "x.1": "number", "note": "text", "empty": "number",
                           "mixed": "text"}
    assert plain.values["x"][2] == 0.30000000000000004  # exact parsing
    assert list(plain.values["label"]) == ["cat", "dog", None, "cat"]
    assert list(plain.values["flag"]) == [True, False, True, False]
    assert plain.values["note"][0] == "a, quoted"
    assert list(plain.lines) == [2, 4, 5, 6]  # the blank line 3 is skipped
    assert plain.as_float("mixed") is None
    assert plain.first_non_number("mixed") == ("oops", 4)
    np.testing.assert_array_equal(plain.as_float("flag"), [1.0, 0.0, 1.0, 0.0])


def test_both_readers_on_generated_numbers(tmp_path, rng):
    X = rng.standard_normal((40, 3)) * 10.0 ** rng.integers(-8, 8, size=(40, 3))
    lines = ["a,b,c"] + [",".join(repr(float(v)) for v in row) for row in X]
    plain, pandas_table = _tables(tmp_path, "\n".join(lines) + "\n")
    assert_same_table(plain, pandas_table)
    for j, name in enumerate("abc"):
        np.testing.assert_array_equal(plain.values[name], X[:, j])  # round trip, bit for bit


@pytest.mark.parametrize("text", [
    "a,b\n1,nan\n2,3\n",            # all numbers: NumPy's C parser
    "a,b\n\"1.5\",2\n-3,4e-2\n",     # quoted numbers too
    "a,b\n1,2\n\n3,4\n",             # a blank line: the csv module (line numbers)
    "a,b\n1_000,2\n3,4\n",            # an underscore: text, as for pandas
    "a,b\r\n1,2\r\n3,4\r\n",          # Windows line ends
])
def test_numeric_files_both_paths(tmp_path, text):
    plain, pandas_table = _tables(tmp_path, text)
    assert_same_table(plain, pandas_table)


@pytest.mark.parametrize("text, message", [
    ("", r"bad\.csv: empty file \(expected a CSV file with a header row\)"),
    ("a,b\n1,2\n3,4,5\n", "Expected 2 fields in line 3, saw 3"),
])
def test_plain_reader_errors(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(csvtable.CSVError, match=message):
        csvtable._read_plain(path)


def test_plain_reader_rejects_other_encodings(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("name,x\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(csvtable.CSVError, match="not a readable CSV file"):
        csvtable._read_plain(path)


def test_short_rows_are_missing_values(tmp_path):
    plain, pandas_table = _tables(tmp_path, "a,b\n1,2\n3\n")
    assert_same_table(plain, pandas_table)
    assert np.isnan(plain.values["b"][1])


def test_write_round_trips_floats_and_labels():
    out = io.StringIO()
    csvtable.write(out, ["prediction", "p"], [np.array(["x", "y, z"]), np.array([0.1, 1e-300])])
    assert out.getvalue() == 'prediction,p\nx,0.1\n"y, z",1e-300\n'
