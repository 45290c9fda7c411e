"""Redis's instructions per member of a flush's ZINCRBYs inside a Lua
script, counted by callgrind (the same count whatever else the machine is
doing), two ways:

  multiplied: the script parses each increment, multiplies it by its
              landmark's factor and hands Lua's number to ZINCRBY (which
              formats it), as apply.lua did before it added increments
              as sent;
  as sent:    the writer computed each increment against the landmark,
              and the script hands the string it was sent to ZINCRBY, as
              apply.lua does now.

Each way runs in a redis-server of its own under callgrind: 10 calls of
5,000 members on one zset, the increments formatted as the service's Redis
client formats them (shortest round trip). A run with no script call is
subtracted. Prints instructions per member for each way, then where the
way apply.lua takes goes inside the server: the sorted set's own work,
formatting each ZINCRBY's reply (the new score) as text, parsing each
increment, and the strings Lua makes of arguments and replies.

    ~/.cache/popularity-bench/venv/bin/python bench/script_instructions.py [SERVER...]

SERVER is a server binary taking redis-server's arguments (default:
redis-server; a Valkey server compares). Needs valgrind, the server and
redis-py (the venv bench/run.sh makes).
"""

import os
import random
import socket
import subprocess
import sys
import tempfile
import time

import redis

MULTIPLIED = """
local f = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], tonumber(ARGV[i + 1]) * f, ARGV[i])
end
return 1
"""

AS_SENT = """
for i = 2, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
end
return 1
"""

MEMBERS = 5_000
CALLS = 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(client):
    """Returns once the server `client` talks to answers (at most 60 s)."""
    for _ in range(300):
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.2)


# Where the as-sent way's instructions go: (label, the server's functions,
# counted inclusively).
PARTS = [
    ("the sorted set (zsetAdd)", ["zsetAdd"]),
    ("formatting each reply (addReplyDouble)", ["addReplyDouble"]),
    ("parsing each increment (getDoubleFromObject)", ["getDoubleFromObject"]),
    ("Lua strings of arguments and replies (lua_pushlstring)", ["lua_pushlstring"]),
]


def instructions(server, script, out_dir, name):
    """Instructions `server` ran for CALLS calls of `script` (None: none)."""
    port = free_port()
    out = os.path.join(out_dir, f"{name}.out")
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         server, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    wait_until_up(client)
    rng = random.Random(7)
    members = [f"site:article-{i:06d}" for i in range(MEMBERS)]
    factor = 2 ** (1_234_567 / 7_200_000)
    registered = client.register_script(script) if script else None
    for _ in range(CALLS):
        args = [repr(factor)]
        for m in members:
            v = rng.random() * 7 * 2 ** (-rng.random())
            args += [m, repr(v) if script == MULTIPLIED else repr(v * factor)]
        if registered:
            registered(keys=["z"], args=args)
        else:
            client.ping()
    client.shutdown(nosave=True)
    process.wait()
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    sys.exit(f"no totals in {out}")


def inclusive(out, functions):
    """Instructions of `functions` with what they call, from callgrind's `out`."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", out],
                          capture_output=True, text=True, check=True).stdout
    total = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-2].split(":")[-1] in functions:
            total += int(parts[0].replace(",", ""))
    return total


def main():
    servers = sys.argv[1:] or ["redis-server"]
    for server in servers:
        version = subprocess.run([server, "--version"], capture_output=True,
                                 text=True).stdout.strip()
        print(version)
        with tempfile.TemporaryDirectory() as d:
            base = instructions(server, None, d, "none")
            per = {}
            for name, script in [("multiplied", MULTIPLIED), ("as sent", AS_SENT)]:
                per[name] = (instructions(server, script, d, name) - base) / (MEMBERS * CALLS)
            for name, n in per.items():
                print(f"  {name}: {n:,.0f} instructions per member")
            print(f"  as sent / multiplied: {per['as sent'] / per['multiplied']:.3f}")
            out = os.path.join(d, "as sent.out")
            for label, functions in PARTS:
                n = inclusive(out, functions) / (MEMBERS * CALLS)
                print(f"    {label}: {n:,.0f} per member ({n / per['as sent']:.0%})")


if __name__ == "__main__":
    main()
