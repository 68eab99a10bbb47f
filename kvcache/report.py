"""`kvcache report RESULT.json...`: the summary, the headline (--headline) or the checked result and its
headline figures as JSON (--json) of result files, and tables of them (--csv, --xlsx: kvcache.export).

Every file is read and checked (kvcache.result_reader) before anything is printed, so a damaged file among
several gives exit 2 and one short message naming it, never a traceback or half a report. The export paths
(and xlsxwriter, for --xlsx) are checked before the results are read, so bad ones create nothing.
"""

import json
import os
from typing import List, Optional

from kvcache import export
from kvcache.errors import UsageError
from kvcache.headline import headline, headline_figures
from kvcache.result_reader import load_result
from kvcache.summary import format_summary

SUMMARY, HEADLINE, JSON = "summary", "headline", "json"


def run_report(
    paths: List[str], form: Optional[str], stdout, csv_path: Optional[str] = None, xlsx_path: Optional[str] = None
) -> int:
    """Print `form` (the summary when nothing else is asked for) and write the exports asked for."""
    exports = {
        option: path for option, path in ((export.CSV_OPTION, csv_path), (export.XLSX_OPTION, xlsx_path)) if path
    }
    for option, path in exports.items():
        export.check_target(option, path)
    if len(exports) == 2 and os.path.abspath(csv_path) == os.path.abspath(xlsx_path):
        raise UsageError(export.XLSX_OPTION, "is the same file as --csv")
    xlsxwriter = export.xlsxwriter_module() if xlsx_path else None
    results = [(path, load_result(path)) for path in paths]
    if csv_path:
        export.write_csv(export.CSV_OPTION, csv_path, results)
    if xlsx_path:
        export.write_xlsx(export.XLSX_OPTION, xlsx_path, results, xlsxwriter)
    if form is None and exports:
        # Asked only for files: say where they went (the summary is one `kvcache report` away).
        for option, path in exports.items():
            stdout.write(f"wrote {path} ({option[2:]}, {len(results)} run(s))\n")
        return 0
    form = form or SUMMARY
    if form == JSON:
        text = json.dumps(
            [{"path": path, "headline": headline_figures(result), "result": result} for path, result in results],
            indent=2,
        )
    elif form == HEADLINE:
        # One file: its headline alone (the report role writes it to headline.txt); several: each under its name.
        text = "\n\n".join(
            headline(result) if len(results) == 1 else f"== {path}\n{headline(result)}" for path, result in results
        )
    else:
        text = "\n".join(f"== {path}\n{format_summary(result)}" for path, result in results)
    stdout.write(text + "\n")
    return 0
