"""Redis's CPU per sorted-set update, inside a script and without one.

Starts its own redis-server (no persistence, a random port), fills one
sorted set with 10,000 members, then sends the same 300 batches of 1,000
increments (Pareto-distributed members, as a newsroom's reads are) in
several ways, and prints Redis's CPU (INFO cpu, user + system) per
command for each, twice in turn:

- ZINCRBY called by a script, one EVALSHA per batch (as the apply script
  does);
- ZINCRBY pipelined, one round trip per batch, and in MULTI/EXEC;
- for scale: ZADD XX (the same update with an integer reply), ZSCORE (a
  lookup with a double's reply), HINCRBY and PING.

Run with the bench's virtual environment (bench/run.sh makes it):

    ~/.cache/popularity-bench/venv/bin/python bench/zset_cost.py
"""

import random
import subprocess

import redis

from script_instructions import free_port, wait_until_up

MEMBERS = 10_000
BATCH = 1_000
BATCHES = 300
SCRIPT = "for i = 1, #ARGV, 2 do redis.call('ZINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end return 1"


def main():
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        r = redis.Redis(port=port)
        wait_until_up(r)
        members = [f"article-{i:06d}" for i in range(MEMBERS)]
        rng = random.Random(1)
        r.zadd("z", {m: rng.random() * 100 for m in members})
        batches = [
            [(round(rng.random() * 3, 6), members[int(rng.paretovariate(1.1)) % MEMBERS]) for _ in range(BATCH)]
            for _ in range(BATCHES)
        ]
        sha = r.script_load(SCRIPT)

        def cpu():
            info = r.info("cpu")
            return info["used_cpu_user"] + info["used_cpu_sys"]

        def scripted():
            for b in batches:
                r.evalsha(sha, 1, "z", *[x for inc, m in b for x in (inc, m)])

        def pipelined(command, transaction=False):
            def run():
                for b in batches:
                    p = r.pipeline(transaction=transaction)
                    for inc, m in b:
                        p.execute_command(*command(inc, m))
                    p.execute()

            return run

        ways = [
            ("ZINCRBY in a script (EVALSHA per batch)", scripted),
            ("ZINCRBY pipelined", pipelined(lambda i, m: ("ZINCRBY", "z", i, m))),
            ("ZINCRBY in MULTI/EXEC", pipelined(lambda i, m: ("ZINCRBY", "z", i, m), True)),
            ("ZADD XX (integer reply)", pipelined(lambda i, m: ("ZADD", "z", "XX", i, m))),
            ("ZSCORE (a double's reply)", pipelined(lambda i, m: ("ZSCORE", "z", m))),
            ("HINCRBY", pipelined(lambda i, m: ("HINCRBY", "h", m, 1))),
            ("PING", pipelined(lambda i, m: ("PING",))),
        ]
        print(f"Redis CPU per command, {BATCHES} batches of {BATCH} on a set of {MEMBERS} members:")
        for round_ in (1, 2):
            for name, run in ways:
                before = cpu()
                run()
                spent = cpu() - before
                print(f"  round {round_}: {name:42s} {1e6 * spent / (BATCH * BATCHES):.2f} µs")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
