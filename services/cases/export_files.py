"""Export files, written row by row: CSV with the csv module, XLSX as its XML streamed into
its zip file (never all held in memory).

Every text cell goes through ``neutralise`` first: a spreadsheet would run a cell starting with
``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return before one) as a formula, and an
export holds what contacts wrote. Nothing here knows what the rows mean (services/cases/
handlers/export_kinds.py does).
"""

from __future__ import annotations

import csv
import re
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

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
    """An Office Open XML workbook written straight into its zip file, row by row.

    openpyxl's write-only workbook builds an object per cell and spent three quarters of an
    export's time doing so; a worksheet is a plain XML file, so each row is formatted here as
    text and streamed into the zip entry (compressed as it goes: nothing grows with the row
    count). Text goes in inline strings (no shared-string table to hold in memory), times as
    Excel serial numbers in a date-time style, in UTC (Excel has no zones: the header says UTC).
    Past a sheet's row limit the rows go on in another sheet, each with the header first.
    """

    def __init__(self, path: Path, header: Sequence[str], title: str) -> None:
        self._zip = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1)
        self._header = [neutralise(h) for h in header]
        self._title = _ILLEGAL_SHEET_NAME.sub(" ", title)[:25] or "export"
        self._names: list[str] = []
        self._sheet: IO[bytes] | None = None
        self._rows = XLSX_ROWS  # a new sheet at the first row

    def write(self, row: Sequence[Any]) -> None:
        if self._rows >= XLSX_ROWS:
            self._new_sheet()
        self._rows += 1
        cells = "".join(map(_xlsx_cell_xml, row))
        self._sheet.write(f'<row r="{self._rows}">{cells}</row>'.encode())  # type: ignore[union-attr]

    def close(self) -> None:
        if self._sheet is None:  # no rows: the header alone
            self._new_sheet()
        self._end_sheet()
        sheets = "".join(
            f'<sheet name="{_xml_text(name)}" sheetId="{n}" r:id="rId{n}"/>'
            for n, name in enumerate(self._names, 1)
        )
        relations = "".join(
            f'<Relationship Id="rId{n}" Type="{_OFFICE}/worksheet" '
            f'Target="worksheets/sheet{n}.xml"/>'
            for n in range(1, len(self._names) + 1)
        )
        overrides = "".join(
            f'<Override PartName="/xl/worksheets/sheet{n}.xml" ContentType="{_SHEET_TYPE}"/>'
            for n in range(1, len(self._names) + 1)
        )
        styles_id = len(self._names) + 1
        self._part("[Content_Types].xml", _CONTENT_TYPES.format(overrides=overrides))
        self._part("_rels/.rels", _ROOT_RELS)
        self._part("xl/workbook.xml", _WORKBOOK.format(sheets=sheets))
        self._part(
            "xl/_rels/workbook.xml.rels",
            _WORKBOOK_RELS.format(relations=relations, styles_id=styles_id),
        )
        self._part("xl/styles.xml", _STYLES)
        self._zip.close()

    def _new_sheet(self) -> None:
        self._end_sheet()
        self._names.append(self._title + (f" {len(self._names) + 1}" if self._names else ""))
        name = f"xl/worksheets/sheet{len(self._names)}.xml"
        self._sheet = self._zip.open(name, "w", force_zip64=True)
        header = "".join(map(_xlsx_cell_xml, self._header))
        self._sheet.write(f'{_SHEET_START}<row r="1">{header}</row>'.encode())
        self._rows = 1

    def _end_sheet(self) -> None:
        if self._sheet is not None:
            self._sheet.write(_SHEET_END.encode())
            self._sheet.close()

    def _part(self, name: str, xml: str) -> None:
        self._zip.writestr(name, _XML_DECLARATION + xml)


def _xml_text(text: str) -> str:
    if "&" in text or "<" in text or ">" in text or '"' in text:
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        text = text.replace('"', "&quot;")
    return text


def _xlsx_cell_xml(value: Any) -> str:
    """One ``<c>`` element; runs for every cell of a million-row export."""
    if isinstance(value, str):
        if not value:
            return "<c/>"
        if value.startswith(FORMULA_STARTS):
            value = "'" + value
        if not value.isprintable():  # rare: only then look for what XML cannot carry
            value = _ILLEGAL_XML.sub("", value)
        return f'<c t="inlineStr"><is><t xml:space="preserve">{_xml_text(value)}</t></is></c>'
    if value is None:
        return "<c/>"
    if isinstance(value, bool):  # before int: a bool is an int
        return f'<c t="b"><v>{int(value)}</v></c>'
    if isinstance(value, datetime):
        serial = (value.astimezone(UTC) - _EXCEL_EPOCH) / _DAY
        return f'<c s="1"><v>{serial!r}</v></c>'
    if isinstance(value, int | float):
        return f"<c><v>{value!r}</v></c>"
    return _xlsx_cell_xml(str(value))


_EXCEL_EPOCH = datetime(1899, 12, 30, tzinfo=UTC)  # day 0 of Excel's 1900 date system
_DAY = timedelta(days=1)
_ILLEGAL_SHEET_NAME = re.compile(r"[\\/?*\[\]:]")
_OFFICE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_SHEET_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_SHEET_START = f'{_XML_DECLARATION}<worksheet xmlns="{_MAIN}"><sheetData>'
_SHEET_END = "</sheetData></worksheet>"
_CONTENT_TYPES = (
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/styles.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
    "{overrides}</Types>"
)
_ROOT_RELS = (
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    f'<Relationship Id="rId1" Type="{_OFFICE}/officeDocument" Target="xl/workbook.xml"/>'
    "</Relationships>"
)
_WORKBOOK = f'<workbook xmlns="{_MAIN}" xmlns:r="{_OFFICE}"><sheets>{{sheets}}</sheets></workbook>'
_WORKBOOK_RELS = (
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    f'{{relations}}<Relationship Id="rId{{styles_id}}" Type="{_OFFICE}/styles" '
    'Target="styles.xml"/></Relationships>'
)
# Style 0 is the default; style 1 shows a number as a date and time (format 22 is built in).
_STYLES = (
    f'<styleSheet xmlns="{_MAIN}">'
    '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="22" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    "</cellXfs>"
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)


def open_writer(path: Path, file_format: str, header: Sequence[str], title: str) -> RowWriter:
    if file_format == "csv":
        return CsvWriter(path, header)
    if file_format == "xlsx":
        return XlsxWriter(path, header, title)
    raise ValueError(f"unknown export format {file_format!r}")
