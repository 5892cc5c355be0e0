"""Client CPU per Redis call, with the parser redis-py picked (hiredis when installed): the
README's "79 against 112 µs of client CPU a call". Run it twice, with and without hiredis:

    ./run ticketflow services up
    PYTHONPATH=. .venv/bin/python bench/redis_client_cpu.py
    .venv/bin/pip uninstall -y hiredis && PYTHONPATH=. .venv/bin/python bench/redis_client_cpu.py
    .venv/bin/pip install -e .          # puts hiredis back
"""

from __future__ import annotations

import argparse
import time

import redis

from pipeline.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args()
    client = redis.Redis.from_url(load_settings().redis_url or "redis://127.0.0.1:6379/0")
    connection = client.connection_pool.get_connection()
    parser_name = type(connection._parser).__name__
    client.connection_pool.release(connection)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.calls // 2):
        client.set("bench:redis-client-cpu", b"y" * 200)
        client.get("bench:redis-client-cpu")
    calls = 2 * (args.calls // 2)
    print(f"{parser_name}: {1e6 * (time.process_time() - cpu) / calls:.1f} µs of client CPU a call, "
          f"{1e6 * (time.perf_counter() - wall) / calls:.1f} µs of wall time")
    client.delete("bench:redis-client-cpu")


if __name__ == "__main__":
    main()
