"""`kvcache report RESULT.json...`: the summary, the headline (--headline) or the checked result and its
headline figures as JSON (--json) of result files.

Every file is read and checked (kvcache.result_reader) before anything is printed, so a damaged file among
several gives exit 2 and one short message naming it, never a traceback or half a report.
"""

import json
from typing import List

from kvcache.headline import headline, headline_figures
from kvcache.result_reader import load_result
from kvcache.summary import format_summary

SUMMARY, HEADLINE, JSON = "summary", "headline", "json"


def run_report(paths: List[str], form: str, stdout) -> int:
    results = [(path, load_result(path)) for path in paths]
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
