#!/bin/sh
# eval.sh REV NAME: check out REV in /work/main, drop the page cache, eval-annotators n=100 into a new folder
set -e
cd /work/main
git checkout -q "$1"
sync; echo 3 > /proc/sys/vm/drop_caches
exec /usr/bin/time -v .venv/bin/prefsynth eval-annotators --pairs hh-rlhf-helpful --n 100 --out /tmp/fb/eval-$2-$$ >> /tmp/fb/eval-$2.log 2>&1
