#!/usr/bin/env bash
# Publish a results folder as branch BRANCH of REMOTE: its README.md at the branch's root, tables, figures and
# metrics, no checkpoints, locks or temporary files. One commit per call on top of the branch (none when nothing
# changed); the working tree, index and current branch of this checkout are left alone.
#   scripts/publish-results.sh [RESULTS=results] [BRANCH=results] [REMOTE=origin]
set -euo pipefail
src=$(cd "${1:-results}" && pwd)
branch=${2:-results}
remote=${3:-origin}
test -f "$src/README.md" || { echo "publish-results: $src/README.md is missing; nothing published" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export GIT_INDEX_FILE="$tmp/index"
export GIT_AUTHOR_NAME="${GIT_AUTHOR_NAME:-bvbench nightly}"
export GIT_AUTHOR_EMAIL="${GIT_AUTHOR_EMAIL:-41898282+github-actions[bot]@users.noreply.github.com}"
export GIT_COMMITTER_NAME="${GIT_COMMITTER_NAME:-$GIT_AUTHOR_NAME}"
export GIT_COMMITTER_EMAIL="${GIT_COMMITTER_EMAIL:-$GIT_AUTHOR_EMAIL}"

parent=""
if git fetch --quiet --depth 1 "$remote" "refs/heads/$branch:refs/remotes/$remote/$branch" 2>/dev/null; then
  parent=$(git rev-parse "refs/remotes/$remote/$branch")
fi
# the same exclusions as .gitignore's results/ lines (checkpoints, temporary files, locks, per-run heat maps)
git --work-tree="$src" add --all --force -- . ':(exclude,glob)**/checkpoint*.pt' ':(exclude,glob)**/*.tmp' \
  ':(exclude,glob)**/.*.lock' ':(exclude,glob)*/*/*/confusion.png'
tree=$(git write-tree)
if [ -n "$parent" ] && [ "$(git rev-parse "$parent^{tree}")" = "$tree" ]; then
  echo "publish-results: $remote/$branch already holds these results"
  exit 0
fi
msg="results: nightly of $(date -u +%Y-%m-%dT%H:%MZ) from $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
commit=$(git commit-tree "$tree" ${parent:+-p "$parent"} -m "$msg")
git push --quiet "$remote" "$commit:refs/heads/$branch"
echo "publish-results: $remote/$branch is now $commit"
