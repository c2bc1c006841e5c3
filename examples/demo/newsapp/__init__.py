"""Tiny news service used by loopprof's demo (examples/demo.sh)."""
