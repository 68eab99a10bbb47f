"""Tabular exports of results: `kvcache report R.json... --csv OUT.csv` and `--xlsx OUT.xlsx`.

The columns come from the results themselves: a result's scalar fields, flattened to dotted names, and the
headline's figures under `headline.`. Several files give the union of their columns, in the order first met.
The summary (the CSV, and the XLSX's `summary` sheet) has one row per result; the XLSX adds `config` (one
key/value row per setting per run), `per_rank`, `timeseries` and `qos` (one row per rank, sample and class).

Each file is written to a temporary file beside it and moved into place; a path that exists is refused, as is
one whose directory is missing: the tool never replaces a file it did not create.
"""

import csv
import json
import os
import tempfile
from typing import Dict, Iterable, List, Tuple

from kvcache.errors import UsageError, shown_path
from kvcache.headline import headline_figures

CSV_OPTION, XLSX_OPTION = "--csv", "--xlsx"
XLSX_HINT = "needs xlsxwriter: pip install 'storagebench-kvcache[report]'"
# Top-level blocks that are not one run's summary figures: the settings (the `config` sheet), the rows of the
# other sheets, and the per-class QoS block, which the summary keeps (one column per class and field).
NOT_SUMMARY = ("schema", "config", "environment", "per_rank", "timeseries")
LIST_SEPARATOR = "; "
NEW_FILE_MODE = 0o666

Row = Dict[str, object]


def flatten(value, prefix: str = "", skip: Iterable[str] = ()) -> Row:
    """The scalar leaves of `value` under dotted names; a list of scalars is one cell, a list of objects none."""
    out: Row = {}
    if isinstance(value, dict):
        for key, item in value.items():
            if key in skip:
                continue
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list):
        if all(not isinstance(item, (dict, list)) for item in value):
            out[prefix] = LIST_SEPARATOR.join(cell_text(item) for item in value)
    else:
        out[prefix] = value
    return out


def summary_row(path: str, result: dict) -> Row:
    row: Row = {"path": path}
    row.update(flatten(headline_figures(result), "headline"))
    row.update(flatten(result, skip=NOT_SUMMARY))
    return row


def config_rows(path: str, result: dict) -> List[Row]:
    settings = flatten({"config": result.get("config", {}), "environment": result.get("environment", {})})
    return [{"path": path, "key": key, "value": value} for key, value in settings.items()]


def per_rank_rows(path: str, result: dict) -> List[Row]:
    return [{"path": path, **flatten(rank, skip=("histograms",))} for rank in result.get("per_rank", [])]


def timeseries_rows(path: str, result: dict) -> List[Row]:
    return [{"path": path, **flatten(sample)} for sample in result.get("timeseries", [])]


def qos_rows(path: str, result: dict) -> List[Row]:
    return [{"path": path, "class": name, **flatten(block)} for name, block in (result.get("qos") or {}).items()]


def table(rows: List[Row]) -> Tuple[List[str], List[Row]]:
    """The union of the rows' columns, in the order first met, and the rows."""
    columns: Dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns), rows


def sheets(results: List[Tuple[str, dict]]) -> Dict[str, Tuple[List[str], List[Row]]]:
    """The XLSX's sheets, each (columns, rows); `summary` is the CSV."""
    makers = {
        "summary": lambda path, result: [summary_row(path, result)],
        "config": config_rows,
        "per_rank": per_rank_rows,
        "timeseries": timeseries_rows,
        "qos": qos_rows,
    }
    return {
        name: table([row for path, result in results for row in make(path, result)]) for name, make in makers.items()
    }


def check_target(option: str, path: str) -> None:
    """Bad output paths are refused before anything is read or written."""
    where = shown_path(path)
    if os.path.isdir(path):
        raise UsageError(option, f"{where} is a directory; give a file name")
    if os.path.lexists(path):
        raise UsageError(option, f"{where} exists; the tool does not replace a file it did not create")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(option, f"the directory of {where} does not exist")


def xlsxwriter_module(option: str = XLSX_OPTION):
    try:
        import xlsxwriter  # noqa: PLC0415 - an optional extra, imported only for --xlsx and --xlsx-output
    except ImportError:
        raise UsageError(option, XLSX_HINT) from None
    return xlsxwriter


def write_csv(option: str, path: str, results: List[Tuple[str, dict]]) -> None:
    columns, rows = table([summary_row(name, result) for name, result in results])

    def write(temp: str) -> None:
        with open(temp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows([cell_text(row.get(column)) for column in columns] for row in rows)

    write_new_file(option, path, write)


def write_xlsx(option: str, path: str, results: List[Tuple[str, dict]], xlsxwriter) -> None:
    def write(temp: str) -> None:
        workbook = xlsxwriter.Workbook(temp, {"strings_to_numbers": False, "nan_inf_to_errors": True})
        bold = workbook.add_format({"bold": True})
        for name, (columns, rows) in sheets(results).items():
            sheet = workbook.add_worksheet(name)
            sheet.write_row(0, 0, columns, bold)
            sheet.freeze_panes(1, 0)
            for index, row in enumerate(rows, start=1):
                for column, key in enumerate(columns):
                    _cell(sheet, index, column, row.get(key))
        workbook.close()

    write_new_file(option, path, write)


def _cell(sheet, row: int, column: int, value) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        sheet.write_boolean(row, column, value)
    elif isinstance(value, (int, float)):
        sheet.write_number(row, column, value)
    else:
        sheet.write_string(row, column, cell_text(value))


def cell_text(value) -> str:
    """A cell as text: empty for null, true/false as in the JSON, numbers as Python writes them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_new_file(option: str, path: str, write) -> None:
    """`write(temp)` fills a temporary file beside `path`, which is then linked into place (never over a file)."""
    where = shown_path(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(handle)
    try:
        os.chmod(temp, NEW_FILE_MODE & ~_umask())  # as open() would make it: mkstemp's is private to the owner
        write(temp)
        try:
            os.link(temp, path)  # fails if a file appeared at `path` meanwhile
        except FileExistsError:
            raise UsageError(option, f"{where} exists; the tool does not replace a file it did not create") from None
        except OSError:
            os.replace(temp, path)  # a filesystem without hard links: checked free just before
    except OSError as exc:
        raise UsageError(option, f"cannot write {where}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
