"""Shared checks for the readers: label tables, .mat arrays, scores, image look-up and the final ``Dataset``.

Every reader goes through these helpers, so every data set gets the same checks and the same error messages.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import IQADataError, IQAMissingFileError, PathLike
from .scales import ScoreScale

#: A column spec: logical name -> accepted header names (compared case-insensitively, surrounding spaces ignored).
ColumnSpec = Mapping[str, Sequence[str]]


def require_dir(path: PathLike, what: str = "data set folder") -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise IQAMissingFileError(f"{what} does not exist or is not a folder", file=path)
    return path.resolve()


def require_file(path: PathLike, what: str = "label file") -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise IQAMissingFileError(f"{what} does not exist", file=path)
    return path.resolve()


def first_existing(candidates: Iterable[PathLike], what: str) -> Path:
    candidates = [Path(c) for c in candidates]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise IQAMissingFileError(f"{what} not found; looked for: " + ", ".join(str(c) for c in candidates))


def _norm(header: Any) -> str:
    return "" if header is None else str(header).strip().lstrip("\ufeff").lower()


def match_columns(header: Sequence[Any], spec: ColumnSpec, file: PathLike, row: int, optional: Iterable[str] = ()) -> Dict[str, int]:
    """Find each logical column of ``spec`` in ``header``; raise naming the file if a required one is missing."""
    normalised = [_norm(h) for h in header]
    optional = set(optional)
    found: Dict[str, int] = {}
    missing = []
    for logical, names in spec.items():
        for name in names:
            if name.lower() in normalised:
                found[logical] = normalised.index(name.lower())
                break
        else:
            if logical not in optional:
                missing.append("/".join(names))
    if missing:
        shown = [str(h).strip() for h in header if h is not None and str(h).strip()]
        raise IQADataError(f"missing column(s) {missing}; the header has {shown}", file=file, row=row)
    return found


Row = Tuple[int, Dict[str, Any]]


def csv_records(path: PathLike, delimiter: str = ",") -> List[Tuple[int, List[str]]]:
    """All non-blank records of a delimited text file as ``(line number, fields)``, the header included."""
    path = require_file(path)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        records = [(reader.line_num, record) for record in reader if any(cell.strip() for cell in record)]
    if not records:
        raise IQADataError("file is empty (no header line)", file=path)
    return records


def read_csv_table(path: PathLike, spec: ColumnSpec, optional: Iterable[str] = (), delimiter: str = ",") -> List[Row]:
    """Read a delimited text file with a header line. Returns ``(line number, {logical column: text})`` per row."""
    path = require_file(path)
    (header_line, header), *records = csv_records(path, delimiter)
    columns = match_columns(header, spec, path, header_line, optional)
    rows: List[Row] = []
    for line, record in records:
        if len(record) < len(header):
            raise IQADataError(f"expected {len(header)} fields, found {len(record)}: {record}", file=path, row=line)
        rows.append((line, {key: record[index].strip() for key, index in columns.items()}))
    return rows


def read_xlsx_table(
    path: PathLike, spec: ColumnSpec, optional: Iterable[str] = (), sheet: Optional[str] = None, search_rows: int = 10
) -> List[Row]:
    """Read an ``.xlsx`` sheet whose header is on one of its first ``search_rows`` rows.

    ``sheet`` names the sheet; if ``None`` or absent from the workbook, the first sheet is read. Row numbers are the
    spreadsheet's (1-based).
    """
    import openpyxl

    path = require_file(path)
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises several unrelated types for a bad file
        raise IQADataError(f"cannot read spreadsheet ({type(error).__name__}: {error})", file=path) from error
    try:
        worksheet = workbook[sheet] if sheet is not None and sheet in workbook.sheetnames else workbook.worksheets[0]
        rows: List[Row] = []
        columns: Optional[Dict[str, int]] = None
        first_header: Optional[Tuple[int, Sequence[Any]]] = None
        for number, record in enumerate(worksheet.iter_rows(values_only=True), start=1):
            if columns is None:
                if not any(cell is not None and str(cell).strip() for cell in record):
                    continue
                first_header = first_header or (number, record)
                try:
                    columns = match_columns(record, spec, path, number, optional)
                except IQADataError:
                    if number >= search_rows:
                        break
                continue
            if not any(cell is not None and str(cell).strip() for cell in record):
                continue
            rows.append((number, {key: (record[i] if i < len(record) else None) for key, i in columns.items()}))
        if columns is None:
            if first_header is None:
                raise IQADataError("sheet is empty", file=path)
            match_columns(first_header[1], spec, path, first_header[0], optional)  # raises with the header shown
        return rows
    finally:
        workbook.close()


def read_table(path: PathLike, spec: ColumnSpec, optional: Iterable[str] = (), sheet: Optional[str] = None) -> List[Row]:
    """Read a ``.csv``/``.tsv``/``.txt`` (comma or tab separated) or ``.xlsx`` label table."""
    suffix = Path(path).suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return read_xlsx_table(path, spec, optional, sheet=sheet)
    if suffix == ".xls":
        raise IQADataError("old .xls spreadsheets are not supported; save the sheet as .xlsx or .csv", file=path)
    delimiter = "\t" if suffix == ".tsv" else ","
    return read_csv_table(path, spec, optional, delimiter=delimiter)


def load_mat(path: PathLike, keys: Sequence[Sequence[str]]) -> Tuple[Path, List[Tuple[str, np.ndarray]]]:
    """Load a MATLAB file and pick one variable per entry of ``keys`` (each entry lists accepted names)."""
    import scipy.io

    path = require_file(path, "MATLAB file")
    try:
        content = scipy.io.loadmat(path)
    except Exception as error:  # scipy raises ValueError, TypeError, MatReadError...
        raise IQADataError(f"cannot read MATLAB file ({type(error).__name__}: {error})", file=path) from error
    chosen = []
    variables = sorted(k for k in content if not k.startswith("__"))
    for names in keys:
        for name in names:
            if name in content:
                chosen.append((name, np.asarray(content[name])))
                break
        else:
            raise IQADataError(f"no variable named {' or '.join(names)}; the file has {variables}", file=path)
    return path, chosen


def mat_strings(array: np.ndarray) -> List[str]:
    """Flatten a MATLAB cell array / char array of names into Python strings."""
    array = np.asarray(array)
    if array.dtype.kind in "US":
        if array.ndim <= 1 or array.dtype.itemsize > array.dtype.alignment:  # strings, not single characters
            return [str(x).strip() for x in array.ravel()]
        return ["".join(str(c) for c in line).strip() for line in array.reshape(array.shape[0], -1)]
    out = []
    for item in array.ravel(order="F") if array.dtype == object else array.ravel():
        while isinstance(item, np.ndarray) and item.dtype == object and item.size == 1:
            item = item.ravel()[0]
        if isinstance(item, np.ndarray):
            item = "".join(str(x) for x in item.ravel()) if item.dtype.kind in "US" else str(item.ravel()[0])
        out.append(str(item).strip())
    return out


def parse_score(value: Any, file: PathLike, row: Union[int, str], column: str) -> float:
    """Parse one score; raise naming file and row if it is empty, not a number, NaN or infinite."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise IQADataError(f"empty score in column {column!r}", file=file, row=row)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise IQADataError(f"score {value!r} in column {column!r} is not a number", file=file, row=row) from None
    if not math.isfinite(number):
        raise IQADataError(f"score {value!r} in column {column!r} is not a finite number", file=file, row=row)
    return number


def cell_text(value: Any) -> str:
    """Text of a label-table cell; integral floats from spreadsheets (``1600.0``) lose their ``.0``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "" if value is None else str(value).strip()


class ImageIndex:
    """Find image files under a folder by relative path, case-insensitively (releases differ in letter case)."""

    def __init__(self, folder: PathLike):
        self.folder = Path(folder)
        self._by_relpath: Optional[Dict[str, str]] = None
        self._by_name: Optional[Dict[str, List[str]]] = None

    def _build(self) -> None:
        self._by_relpath, self._by_name = {}, {}
        for directory, _, files in os.walk(self.folder):
            for name in files:
                full = os.path.join(directory, name)
                relative = os.path.relpath(full, self.folder).replace(os.sep, "/").lower()
                self._by_relpath[relative] = full
                self._by_name.setdefault(name.lower(), []).append(full)

    def resolve(self, relpath: str, anywhere: bool = False) -> Optional[str]:
        """Absolute path of ``relpath`` under the folder, or ``None``.

        With ``anywhere=True`` a file of that base name anywhere below the folder is accepted when it is unique.
        """
        relpath = relpath.replace("\\", "/").lstrip("/")
        direct = self.folder / relpath
        if relpath and direct.is_file():
            return str(direct.resolve())
        if self._by_relpath is None:
            self._build()
        found = self._by_relpath.get(relpath.lower())
        if found is None and anywhere:
            candidates = self._by_name.get(os.path.basename(relpath).lower(), [])
            found = candidates[0] if len(candidates) == 1 else None
        return None if found is None else str(Path(found).resolve())

    def require(self, relpath: str, label_file: PathLike, row: Union[int, str], anywhere: bool = False) -> str:
        found = self.resolve(relpath, anywhere=anywhere)
        if found is None:
            raise IQAMissingFileError(
                f"image {relpath!r} named here does not exist under {self.folder}", file=label_file, row=row
            )
        return found


@dataclass
class LabelRow:
    """One parsed label: the image's absolute path, the score as in the file, the scene id and where it came from."""

    image: str
    original: float
    ref: str
    row: Union[int, str]
    extra: Dict[str, Any] = field(default_factory=dict)


def to_dataset(rows: List[LabelRow], scale: ScoreScale, label_file: PathLike, extra_columns: Sequence[str] = ()):
    """Check for duplicates, sort by image path and build the ``datasets.Dataset`` every reader returns.

    Columns: ``image`` (absolute path), ``mos`` (higher is better), ``mos_original`` (as in the file), ``ref``
    (scene id), ``dataset`` (canonical name), then ``extra_columns``. The scale is stored in ``info.description``
    (JSON) so that :func:`get_score_scale` can read it back from the dataset.
    """
    from datasets import Dataset, DatasetInfo, Features, Value

    if not rows:
        raise IQADataError("no labelled images found", file=label_file)
    seen: Dict[str, Union[int, str]] = {}
    for item in rows:
        key = os.path.normcase(item.image)
        if key in seen:
            raise IQADataError(
                f"duplicate entry: image {item.image} was already listed at row {seen[key]}", file=label_file, row=item.row
            )
        seen[key] = item.row
    rows = sorted(rows, key=lambda item: item.image)
    data: Dict[str, List[Any]] = {
        "image": [item.image for item in rows],
        "mos": [scale.to_mos(item.original) for item in rows],
        "mos_original": [float(item.original) for item in rows],
        "ref": [item.ref for item in rows],
        "dataset": [scale.name] * len(rows),
    }
    features = {
        "image": Value("string"),
        "mos": Value("float64"),
        "mos_original": Value("float64"),
        "ref": Value("string"),
        "dataset": Value("string"),
    }
    for column in extra_columns:
        values = [item.extra.get(column) for item in rows]
        data[column] = values
        features[column] = Value("int64") if all(isinstance(v, int) for v in values) else Value("string")
    features = Features(features)
    info = DatasetInfo(description=scale.to_json(), dataset_name=scale.name, features=features)
    return Dataset.from_dict(data, features=features, info=info)
