#!/usr/bin/env bash
# The default build's wall time and peak memory, three ways, on this machine (issue: fast on a
# fresh machine). Run from the repository root after `make install`, on a quiet machine:
#
#   bench/build_speed.sh [RESULTS_DIR]       # default bench/results/speed/<date>
#
#   1. cold:   the shared shard cache emptied and (when allowed, i.e. as root) the OS page
#              cache dropped, into a new output folder;
#   2. again:  into another new output folder (the shared cache now holds every shard);
#   3. again --no-cache: into a third new folder, computing every shard (page cache warm).
#
# Each run is timed by /usr/bin/time -v (wall clock, "Maximum resident set size"); the build's
# own log (one line per stage without a terminal) is kept beside it. Figures go to the note
# and bench/results/speed/README.md; nothing here asserts a time.
set -euo pipefail
cd "$(dirname "$0")/.."
results=${1:-bench/results/speed/$(date +%Y-%m-%d)}
mkdir -p "$results"
cache=${PREFSYNTH_CACHE_DIR:-$HOME/.cache/prefsynth}
work=$(mktemp -d /tmp/prefsynth-build-speed-XXXX)
trap 'rm -rf "$work"' EXIT

run() {  # name, extra build args...
  local name=$1; shift
  /usr/bin/time -v .venv/bin/prefsynth build --out "$work/$name" "$@" \
    >"$results/build-$name.log" 2>&1
  grep -E "reused|total:|Elapsed|Maximum resident" "$results/build-$name.log"
}

rm -rf "$cache/shards"
sync
if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi
echo "== cold"; run cold
echo "== again, new folder"; run again
echo "== again, new folder, --no-cache"; run again-no-cache --no-cache
for name in again again-no-cache; do  # the same dataset every way
  cmp <(.venv/bin/python -c "import datasets,sys; print(datasets.load_from_disk(sys.argv[1])['train'].to_list())" "$work/cold"/*/dataset) \
      <(.venv/bin/python -c "import datasets,sys; print(datasets.load_from_disk(sys.argv[1])['train'].to_list())" "$work/$name"/*/dataset) \
    && echo "$name: dataset identical to cold"
done
