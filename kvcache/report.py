"""`kvcache report RESULT.json...`: the summary, the headline (--headline) or the checked result and its
headline figures as JSON (--json) of result files, tables of them (--csv, --xlsx: kvcache.export) and a page
of plots (--html: kvcache.html_report). Several files are also compared (kvcache.compare): each figure side by
side with its change against the first, and the median and spread of trials of one configuration.

Every file is read and checked (kvcache.result_reader) before anything is printed, so a damaged file among
several gives exit 2 and one short message naming it, never a traceback or half a report. The export paths
(and xlsxwriter for --xlsx, matplotlib for --html) are checked before the results are read, so bad ones create
nothing.
"""

import json
import os
from typing import List, Optional

from kvcache import export, html_report
from kvcache.compare import comparison, format_comparison
from kvcache.errors import UsageError
from kvcache.headline import headline, headline_figures
from kvcache.result_reader import load_result
from kvcache.summary import format_summary

SUMMARY, HEADLINE, JSON = "summary", "headline", "json"


def run_report(
    paths: List[str],
    form: Optional[str],
    stdout,
    csv_path: Optional[str] = None,
    xlsx_path: Optional[str] = None,
    html_path: Optional[str] = None,
) -> int:
    """Print `form` (the summary when nothing else is asked for) and write the exports asked for."""
    asked = ((export.CSV_OPTION, csv_path), (export.XLSX_OPTION, xlsx_path), (html_report.HTML_OPTION, html_path))
    exports = {option: path for option, path in asked if path}
    seen = {}
    for option, path in exports.items():
        export.check_target(option, path)
        same = seen.setdefault(os.path.abspath(path), option)
        if same != option:
            raise UsageError(option, f"is the same file as {same}")
    xlsxwriter = export.xlsxwriter_module() if xlsx_path else None
    figure_class = html_report.figure_class() if html_path else None
    results = [(path, load_result(path)) for path in paths]
    if csv_path:
        export.write_csv(export.CSV_OPTION, csv_path, results)
    if xlsx_path:
        export.write_xlsx(export.XLSX_OPTION, xlsx_path, results, xlsxwriter)
    if html_path:
        html_report.write_html(html_path, results, figure_class)
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
        if len(results) > 1:
            text += "\n\n" + format_comparison(comparison(results))
    stdout.write(text + "\n")
    return 0
