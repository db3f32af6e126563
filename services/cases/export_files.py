"""Export files, written row by row: CSV with the csv module, XLSX with openpyxl's write-only
workbook (rows go to a temporary XML file as they come, never all held in memory).

Every text cell goes through ``neutralise`` first: a spreadsheet would run a cell starting with
``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return before one) as a formula, and an
export holds what contacts wrote. Nothing here knows what the rows mean (services/cases/
handlers/export_kinds.py does).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CONTENT_TYPES = {
    "csv": "text/csv",  # Flask adds "; charset=utf-8"
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
FORMATS = tuple(CONTENT_TYPES)
XLSX_ROWS = 1_048_576  # a worksheet's limit: beyond it the rows go on to the next sheet
# What XML 1.0 cannot carry (openpyxl refuses it): control characters but tab, LF and CR.
_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def neutralise(value: Any) -> Any:
    """A cell's value, with text that a spreadsheet would read as a formula made plain text by
    a leading apostrophe. Numbers, booleans, times and None stay as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if value is None:
        return ""
    return neutralise(value)


def xlsx_cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)  # Excel has no zones: the header says UTC
    if isinstance(value, str):
        return neutralise(_ILLEGAL_XML.sub("", value))
    return value


class RowWriter(Protocol):
    def write(self, row: Sequence[Any]) -> None: ...

    def close(self) -> None: ...


class CsvWriter:
    """UTF-8 with a byte order mark (so that Excel reads accents right), CRLF lines."""

    def __init__(self, path: Path, header: Sequence[str]) -> None:
        self._file = path.open("w", encoding="utf-8-sig", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow([neutralise(h) for h in header])

    def write(self, row: Sequence[Any]) -> None:
        # csv_cell, inlined: this runs for every cell of a million-row export
        cells = []
        for value in row:
            if isinstance(value, str):
                cells.append("'" + value if value.startswith(FORMULA_STARTS) else value)
            elif value is None:
                cells.append("")
            elif isinstance(value, datetime):
                cells.append(value.astimezone(UTC).isoformat())
            else:
                cells.append(value)
        self._csv.writerow(cells)

    def close(self) -> None:
        self._file.close()


class XlsxWriter:
    """One worksheet (more past a sheet's row limit), each with the header as its first row."""

    def __init__(self, path: Path, header: Sequence[str], title: str) -> None:
        from openpyxl import Workbook

        self._path = path
        self._book = Workbook(write_only=True)
        self._header = [neutralise(h) for h in header]
        self._title = title[:25]
        self._sheets = 0
        self._rows = XLSX_ROWS  # a new sheet at the first row

    def write(self, row: Sequence[Any]) -> None:
        if self._rows >= XLSX_ROWS:
            self._sheets += 1
            suffix = f" {self._sheets}" if self._sheets > 1 else ""
            self._sheet = self._book.create_sheet(self._title + suffix)
            self._sheet.append(self._header)
            self._rows = 1
        self._sheet.append([xlsx_cell(value) for value in row])
        self._rows += 1

    def close(self) -> None:
        if self._sheets == 0:  # no rows: the header alone
            self._book.create_sheet(self._title).append(self._header)
        self._book.save(self._path)


def open_writer(path: Path, file_format: str, header: Sequence[str], title: str) -> RowWriter:
    if file_format == "csv":
        return CsvWriter(path, header)
    if file_format == "xlsx":
        return XlsxWriter(path, header, title)
    raise ValueError(f"unknown export format {file_format!r}")
