"""CSV files as typed columns for the command line: pandas when installed, else NumPy alone.

``read(path)`` returns a :class:`Table` whose columns are one of three kinds,
whichever reader parsed the file:

* ``"number"``: float64 values, NaN where a value is missing;
* ``"bool"``: every value is True/False (``True``, ``TRUE``, ``true``...), none missing;
* ``"text"``: an object array of ``str``, None where a value is missing.

Both readers follow pandas' ``read_csv`` defaults: a header row, blank lines
skipped, pandas' missing-value markers (empty, ``NA``, ``NaN``, ``null``...),
numbers parsed exactly (correctly rounded, as Python's ``float``), duplicate
column names renamed ``a``, ``a.1``... So the same file gives the same model with
or without pandas, which stays an optional package.
"""
import csv
import io

import numpy as np

__all__ = ["Table", "CSVError", "read", "write"]

# pandas' default na_values (pandas/_libs/parsers.pyx STR_NA_VALUES)
NA_VALUES = frozenset(["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                       "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                       "nan", "null"])
TRUE_VALUES = frozenset(["True", "TRUE", "true"])
FALSE_VALUES = frozenset(["False", "FALSE", "false"])


class CSVError(ValueError):
    """A file that cannot be read as a CSV table (the message names the file)."""


class Table:
    """Named, typed columns of equal length (see the module docstring for the kinds)."""

    def __init__(self, columns, kinds, values, lines=None):
        self.columns = list(columns)
        self.kinds = dict(kinds)
        self.values = dict(values)
        self.n_rows = len(self.values[self.columns[0]]) if self.columns else 0
        # file line of each row (1-based, the header is line 1), for error messages
        self.lines = (np.arange(self.n_rows) + 2) if lines is None else np.asarray(lines)

    def missing(self, name):
        """Boolean mask of the missing values of column ``name``."""
        kind, values = self.kinds[name], self.values[name]
        if kind == "number":
            return np.isnan(values)
        if kind == "text":
            return np.array([v is None for v in values], dtype=bool)
        return np.zeros(len(values), dtype=bool)

    def as_float(self, name):
        """Column ``name`` as float64; None if some present value is not a number."""
        kind, values = self.kinds[name], self.values[name]
        if kind == "number":
            return values
        if kind == "bool":
            return values.astype(np.float64)
        out = np.full(len(values), np.nan)
        for k, v in enumerate(values):
            if v is not None:
                number = _number(v)
                if number is None:
                    return None
                out[k] = number
        return out

    def first_non_number(self, name):
        """(value, line) of the first present value of a text column that is not a number."""
        for k, v in enumerate(self.values[name]):
            if v is not None and _number(v) is None:
                return v, int(self.lines[k])
        return None


def _number(text):
    """float(text), or None where pandas would not read a number ("1_000" included)."""
    if "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def read(path):
    """The :class:`Table` of the CSV file ``path``; CSVError (or OSError) if unreadable."""
    try:
        import pandas  # noqa: F401
    except ImportError:
        return _read_plain(path)
    return _read_pandas(path)


def _read_pandas(path):
    import pandas as pd
    try:
        # pandas 3 parses floats exactly by default (and deprecates the option)
        exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision":
                                                                  "round_trip"}
        df = pd.read_csv(path, **exact)
    except pd.errors.EmptyDataError:
        raise CSVError(f"{path}: empty file (expected a CSV file with a header row)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CSVError(f"{path}: not a readable CSV file ({exc})") from None
    except ValueError as exc:
        raise CSVError(f"{path}: not a readable CSV file ({exc})") from None
    kinds, values = {}, {}
    for name in df.columns:
        col = df[name]
        if pd.api.types.is_bool_dtype(col):
            kinds[name], values[name] = "bool", col.to_numpy(dtype=bool)
        elif pd.api.types.is_numeric_dtype(col):
            kinds[name], values[name] = "number", col.to_numpy(dtype=np.float64)
        else:
            missing = col.isna().to_numpy()
            text = np.empty(len(col), dtype=object)
            text[:] = [None if m else str(v) for v, m in zip(col.tolist(), missing)]
            kinds[name], values[name] = "text", text
    return Table([str(c) for c in df.columns], {str(k): v for k, v in kinds.items()},
                 {str(k): v for k, v in values.items()})


def _read_plain(path):
    """The same table with the standard library's csv module and NumPy."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise CSVError(f"{path}: not a readable CSV file ({exc})") from None
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next((fields for fields in reader if fields), None)
        if header is None:
            raise CSVError(f"{path}: empty file (expected a CSV file with a header row)")
        width, rows, lines = len(header), [], []
        numbers = _all_numbers(text, reader.line_num, width)
        if numbers is not None:  # the common case, parsed in C
            names = _unique_names(header)
            return Table(names, {n: "number" for n in names},
                         {n: numbers[:, j].copy() for j, n in enumerate(names)})
        for fields in reader:
            if len(fields) != width:
                if not fields:
                    continue  # a blank line
                if len(fields) > width:
                    raise CSVError(f"{path}: not a readable CSV file (Error tokenizing data. "
                                   f"Expected {width} fields in line {reader.line_num}, "
                                   f"saw {len(fields)})")
                fields = fields + [""] * (width - len(fields))
            rows.append(fields)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise CSVError(f"{path}: not a readable CSV file ({exc})") from None
    names = _unique_names(header)
    columns = list(zip(*rows)) if rows else [()] * len(names)
    underscores = "_" in text  # rare: then each numeric-looking column is checked
    kinds, values = {}, {}
    for name, cells in zip(names, columns):
        kinds[name], values[name] = _typed(cells, underscores)
    return Table(names, kinds, values, lines)


def _all_numbers(text, header_lines, width):
    """The data rows as a float64 array when every cell is a number (NumPy's C parser),
    else None (then the csv module reads the file).  Only for text without blank lines
    (line numbers stay row + 2) and without underscores ("1_000" is text to pandas)."""
    body = text.split("\n", header_lines)[-1] if header_lines else text
    if "_" in body or "\n\n" in body.replace("\r\n", "\n") or not body.strip():
        return None
    try:
        data = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=header_lines,
                          dtype=np.float64, ndmin=2, comments=None, quotechar='"')
    except ValueError:
        return None
    return data if data.shape[1] == width else None


def _unique_names(header):
    """pandas' renaming of duplicate column names: a, a.1, a.2..."""
    names, seen = [], set()
    for k, name in enumerate(header):
        name = name if name != "" else f"Unnamed: {k}"
        base, n = name, 0
        while name in seen:
            n += 1
            name = f"{base}.{n}"
        seen.add(name)
        names.append(name)
    return names


def _typed(cells, underscores=True):
    """(kind, values) of one column's strings, as pandas' parser types it."""
    try:  # the common case, every cell a number: NumPy's string-to-float cast
        numbers = np.array(cells, dtype=str).astype(np.float64)
    except ValueError:
        numbers = None
    if numbers is not None and not (underscores and any("_" in c for c in cells)):
        return "number", numbers  # ("1_000" is text for pandas, a number for float())
    missing = np.array([c in NA_VALUES for c in cells], dtype=bool)
    present = [c for c, m in zip(cells, missing) if not m]
    if present and not missing.any() and all(c in TRUE_VALUES or c in FALSE_VALUES
                                              for c in present):
        return "bool", np.array([c in TRUE_VALUES for c in cells], dtype=bool)
    numbers = np.full(len(cells), np.nan)
    for k, c in enumerate(cells):
        if not missing[k]:
            number = _number(c)
            if number is None:
                break
            numbers[k] = number
    else:
        return "number", numbers
    text = np.empty(len(cells), dtype=object)
    text[:] = [None if m else c for c, m in zip(cells, missing)]
    return "text", text


def write(stream, header, columns):
    """Write ``columns`` (equal-length sequences) under ``header`` as CSV to ``stream``.

    Floats are written as Python's ``repr`` (the shortest text that reads back the
    same number), as pandas' ``to_csv`` does; lines end with ``\\n``.
    """
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(header)
    lists = [np.asarray(c).tolist() for c in columns]
    writer.writerows(zip(*lists))

