"""kv-cache.py's flags that `kvcache run` does not have yet, each with what it is in kv-cache.py.

Every other kv-cache.py flag is an option of `kvcache run` (kvcache/options.py). A user switching from
kv-cache.py who types one of these gets one line naming the mode it belongs to, not argparse's
"unrecognized arguments", which reads like a typo. The README's table "kv-cache.py → kvcache" lists
every flag of both kinds and what to use meanwhile.
"""

from typing import Dict, Sequence

from kvcache.errors import UsageError

NOT_YET: Dict[str, str] = {
    "--validation-trace": "kv-cache.py's validation of hit rates against a recorded trace",
}

SEE = "(see the README, kv-cache.py → kvcache)"


def refuse_not_yet(args: Sequence[str]) -> None:
    """Raise UsageError for the first of `args` (a command's arguments) that is one of NOT_YET.

    Both `--flag value` and `--flag=value` are caught; nothing after `--` is a flag."""
    for arg in args:
        if arg == "--":
            return
        flag = arg.split("=", 1)[0]
        if flag in NOT_YET:
            raise UsageError(flag, f"{NOT_YET[flag]} is not available in this version of kvcache {SEE}")


def epilog() -> str:
    """A line for `kvcache run --help`: which kv-cache.py flags are not here yet."""
    return f"kv-cache.py flags not available yet: {', '.join(NOT_YET)} {SEE}."
