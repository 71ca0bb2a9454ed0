#!/usr/bin/env bash
# Metrics and params of the workspace against a base revision, as Markdown to paste into a
# pull request:   scripts/pr_diff.sh [BASE]     (BASE: any git revision, default: main)
#
# Runs `dvc metrics diff --md` and `dvc params diff --md` from the root of the git
# repository containing the current directory. Exits non-zero when BASE does not exist or
# dvc fails; an empty diff is reported as such, not as an error.
set -euo pipefail

usage() {
    sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
esac
if [[ $# -gt 1 ]]; then
    usage >&2
    exit 2
fi
BASE="${1:-main}"

if ! TOP="$(git rev-parse --show-toplevel 2>/dev/null)"; then
    echo "pr_diff.sh: not inside a git repository: $PWD" >&2
    exit 2
fi
cd "$TOP"

if ! git rev-parse --verify --quiet "${BASE}^{commit}" >/dev/null; then
    echo "pr_diff.sh: base revision '${BASE}' not found (fetch it first, e.g." \
        "git fetch origin ${BASE})" >&2
    exit 2
fi

# dvc: $DVC, else the one on PATH, else the project's virtualenv.
if [[ -z "${DVC:-}" ]]; then
    if command -v dvc >/dev/null 2>&1; then
        DVC=dvc
    elif [[ -x "$TOP/.venv/bin/dvc" ]]; then
        DVC="$TOP/.venv/bin/dvc"
    else
        echo "pr_diff.sh: dvc not found (activate .venv or set DVC=/path/to/dvc)" >&2
        exit 2
    fi
fi
export DVC_NO_ANALYTICS=1

base_sha="$(git rev-parse --short "${BASE}^{commit}")"
head_sha="$(git rev-parse --short HEAD 2>/dev/null || echo none)"
dirty=""
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    dirty=" + uncommitted changes"
fi

section() { # title, command...: the command's Markdown table, or "No change."
    local title="$1" out rows
    shift
    out="$("$@")"
    # dvc prints nothing, or a header and separator with no rows, when nothing changed
    rows="$(grep -c '^|' <<<"$out" || true)"
    printf '### %s\n\n' "$title"
    if [[ "$rows" -gt 2 ]]; then
        # header and separator, then the rows sorted (dvc's row order varies run to run)
        head -n 2 <<<"$out"
        tail -n +3 <<<"$out" | LC_ALL=C sort
        printf '\n'
    else
        printf '_No change._\n\n'
    fi
}

printf '## Metrics and params: `%s` (%s) -> workspace (%s%s)\n\n' \
    "$BASE" "$base_sha" "$head_sha" "$dirty"
section "Metrics" "$DVC" metrics diff --md "$BASE"
section "Params" "$DVC" params diff --md "$BASE"
