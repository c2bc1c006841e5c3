#!/usr/bin/env python3
"""Print a currently free TCP port on 127.0.0.1 (bind port 0, read it, close).

    scripts/free_port.py [COUNT]   # prints COUNT distinct ports, one per line

There is an unavoidable small race between closing and the caller binding.
"""
import socket
import sys


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    socks = []
    try:
        for _ in range(max(1, min(count, 64))):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        for s in socks:
            print(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()


if __name__ == "__main__":
    main()
