#!/usr/bin/env bash
# Regenerates the published leaderboard of the embedded default into leaderboard/published/
# (README.md, index.html, figures) from the shipped `published` sweep. Finished runs in
# leaderboard/published/results.db are kept, so a rerun only does what is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
db="sqlite:///$here/published/results.db"
mkdir -p "$here/published"
sgid-bench sweep published --db "$db"
sgid-bench leaderboard --db "$db" --publish "$here/published"
