#!/usr/bin/env bash
# Runs `ansible-test sanity` and `ansible-test units` on a copy of this checkout laid out as
# .../ansible_collections/storagebench/kvcache (ansible-test refuses any other path, and symlinks).
# The copy holds the committed and the working-tree files git does not ignore (so no .venv).
# Usage: bash tests/ansible-test.sh [VENV]   (VENV: where ansible-core is installed; default .venv)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(cd "$root" && cd "${1:-.venv}" && pwd)
python="$venv/bin/python"
ansible_test="$venv/bin/ansible-test"
[ -x "$ansible_test" ] || { echo "ansible-test not found in $venv (make venv)" >&2; exit 1; }

git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1 || {
    echo "tests/ansible-test.sh copies the files git knows about: run it from a git checkout" >&2
    exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/kvcache-ansible-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/storagebench/kvcache"
mkdir -p "$dest"

# Copy tracked and untracked-but-not-ignored files that exist in the working tree, but not
# playbooks/collections: the checkout's link to itself for playbooks run from it, which galaxy
# leaves out of the collection too (build_ignore).
(
    cd "$root"
    git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' path; do
        case "$path" in playbooks/collections/*) continue ;; esac
        [ -f "$path" ] || [ -L "$path" ] || continue
        printf '%s\0' "$path"
    done | tar --null -T - -cf - | tar -xf - -C "$dest"
)
# A git index at the collection root makes ansible-test honour .gitignore.
git -C "$dest" init -q
git -C "$dest" add -A

# ansible-test downloads a pip bootstrap script from a host that cannot be reached here; give it
# the offline stand-in under the name the installed ansible-test asks for.
pip_version=$("$python" - <<'PY'
import pathlib
import re

import ansible_test

source = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
match = re.search(r"pip='([0-9.]+)'", source.read_text())
print(match.group(1) if match else "24.2")
PY
)
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
cp "$root/tests/utils/get_pip.py" "$cache/get_pip_${pip_version//./_}.py"

cd "$dest"
export PATH="$venv/bin:$PATH"
failed=()
"$ansible_test" sanity --venv --python 3.11 --color no || failed+=(sanity)
# Only the collection's plugin tests: the engine's own unit tests run under plain pytest.
"$ansible_test" units --venv --python 3.11 --color no tests/unit/plugins/ || failed+=(units)
if [ ${#failed[@]} -gt 0 ]; then
    echo "ansible-test failed: ${failed[*]}" >&2
    exit 1
fi
echo "ansible-test sanity and units passed"
