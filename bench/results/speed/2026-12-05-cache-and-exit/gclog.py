import sys, time, threading
LOG = open("gc.txt", "w")
T0 = time.perf_counter()
import prefsynth.engines as engines
orig = engines._return_freed_memory
def timed():
    import gc
    t = time.perf_counter(); n = gc.collect(); t1 = time.perf_counter()
    orig_trim()
    t2 = time.perf_counter()
    print(f"TRIM {t-T0:7.2f} {threading.current_thread().name} gc {t1-t:.3f}s (collected {n}) trim {t2-t1:.3f}s", file=LOG, flush=True)
def orig_trim():
    import ctypes, ctypes.util
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
engines._return_freed_memory = timed
from prefsynth.cli import main
sys.argv = ["prefsynth", *sys.argv[1:]]
main()
