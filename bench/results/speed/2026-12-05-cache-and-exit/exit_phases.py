import time, sys, atexit, os
T0 = time.perf_counter()
def last(): print(f"EXIT last atexit {time.perf_counter()-T0:.2f}", file=sys.stderr, flush=True)
atexit.register(last)
import threading
orig_shutdown = threading._shutdown
def sd():
    print(f"EXIT threading._shutdown start {time.perf_counter()-T0:.2f}", file=sys.stderr, flush=True)
    orig_shutdown()
    print(f"EXIT threading._shutdown end {time.perf_counter()-T0:.2f}", file=sys.stderr, flush=True)
threading._shutdown = sd
from prefsynth.cli import main
sys.argv = ["prefsynth", *sys.argv[1:]]
try:
    main()
finally:
    print(f"EXIT main returned {time.perf_counter()-T0:.2f}", file=sys.stderr, flush=True)
    def first(): print(f"EXIT first atexit {time.perf_counter()-T0:.2f}", file=sys.stderr, flush=True)
    atexit.register(first)
