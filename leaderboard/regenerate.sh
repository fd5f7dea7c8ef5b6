#!/usr/bin/env bash
# Regenerates the published leaderboard of the default (the toy world) into
# leaderboard/published/ (README.md, index.html, figures) from the shipped `published`
# sweep. Finished runs in leaderboard/published/results.db are kept, so a rerun only does
# what is missing. Works without an activated virtual environment: it uses the
# repository's .venv when there is one, else `sgid-bench` on PATH.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bench="$here/../.venv/bin/sgid-bench"
[ -x "$bench" ] || bench="sgid-bench"
db="sqlite:///$here/published/results.db"
mkdir -p "$here/published"
# One task per core on a local Ray cluster (each run uses one thread).
"$bench" sweep published --db "$db" --executor "${EXECUTOR:-ray}"
"$bench" leaderboard --db "$db" --publish "$here/published"
