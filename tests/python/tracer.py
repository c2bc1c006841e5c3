"""Test helper: holds PID as its ptrace tracer (PTRACE_SEIZE of the main thread, which does
not stop it) for SECS seconds, like a debugger or strace left attached. Prints "seized" once
it holds it. The kernel detaches it when this process exits. Needs root (or CAP_SYS_PTRACE).

Usage: tracer.py PID SECS"""

import ctypes
import sys
import time

PTRACE_SEIZE = 0x4206

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
pid = int(sys.argv[1])
if libc.ptrace(PTRACE_SEIZE, pid, None, None) != 0:
    sys.exit(f"PTRACE_SEIZE of {pid} failed: errno {ctypes.get_errno()}")
print("seized", flush=True)
time.sleep(min(float(sys.argv[2]), 120))
