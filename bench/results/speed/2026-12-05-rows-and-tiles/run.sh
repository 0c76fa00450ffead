#!/bin/sh
# run.sh REV NAME: check out REV in /work/main, drop the page cache, cold build into a new folder
set -e
cd /work/main
git checkout -q "$1"
sync; echo 3 > /proc/sys/vm/drop_caches
exec /usr/bin/time -v .venv/bin/prefsynth build --no-cache --out /tmp/fb/$2-$$ >> /tmp/fb/$2.log 2>&1
