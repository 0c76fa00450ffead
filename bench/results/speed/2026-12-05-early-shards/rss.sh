#!/bin/bash
# The RSS of a command's process every 0.5 s: "<seconds since start> <VmRSS KiB>" lines.
# usage: rss.sh OUTFILE -- COMMAND [ARG ...]
out=$1
shift 2
"$@" &
pid=$!
t0=$(date +%s.%N)
while kill -0 "$pid" 2>/dev/null; do
  r=$(grep VmRSS "/proc/$pid/status" 2>/dev/null | awk '{print $2}')
  echo "$(echo "$(date +%s.%N) - $t0" | bc) $r" >> "$out"
  sleep 0.5
done
wait "$pid"
