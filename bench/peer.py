"""Row (h) of `popularity bench`: the consumer a competent engineer would
write in an afternoon instead of this service. confluent-kafka's
`consume(10000)`, increments summed per batch in a dict, one
non-transactional redis-py pipeline of ZINCRBY per batch (overall and per
section); no decay landmarks, no fences, no duplicate filter, no dead
letters, no metadata.

    python peer.py BOOTSTRAP TOPIC REDIS_URL

Reads TOPIC from the beginning until nothing has come for 3 s, and prints
`rate_10_90 rate_all` in messages/s: the rate while the 10% to 90% of what
it read were applied (start-up excluded), and from its first batch to its
last.
"""
import json
import sys
import time
import uuid

import redis
from confluent_kafka import Consumer

WEIGHTS = {"page_view": 1.0, "share": 5.0, "engagement": 0.05}


def main():
    bootstrap, topic, redis_url = sys.argv[1], sys.argv[2], sys.argv[3]
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "peer-" + uuid.uuid4().hex,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
    })
    consumer.subscribe([topic])
    r = redis.Redis.from_url(redis_url)
    seen = 0
    applied = []  # (time, messages applied so far), one per batch
    last = time.monotonic()
    while not applied or time.monotonic() - last < 3.0:
        batch = consumer.consume(10000, timeout=0.5)
        if not batch:
            continue
        if not applied:
            applied.append((time.monotonic(), 0))
        sums = {}
        for m in batch:
            if m.error():
                continue
            seen += 1
            try:
                e = json.loads(m.value())
                w = WEIGHTS[e["type"]]
                if e["type"] == "engagement":
                    w *= float(e["engaged_seconds"])
                article = e["article_id"]
            except (ValueError, KeyError, TypeError):
                continue
            sums[("peer:all", article)] = sums.get(("peer:all", article), 0.0) + w
            section = e.get("section")
            if section:
                key = ("peer:section:" + str(section), article)
                sums[key] = sums.get(key, 0.0) + w
        pipe = r.pipeline(transaction=False)
        for (key, article), inc in sums.items():
            pipe.zincrby(key, inc, article)
        pipe.execute()
        last = time.monotonic()
        applied.append((last, seen))
    consumer.close()
    total = applied[-1][1]
    t10 = next(a for a in applied if a[1] >= total * 0.1)
    t90 = next(a for a in applied if a[1] >= total * 0.9)
    steady = (t90[1] - t10[1]) / max(t90[0] - t10[0], 1e-9)
    whole = total / max(applied[-1][0] - applied[0][0], 1e-9)
    print(f"{steady:.0f} {whole:.0f} {total}")


if __name__ == "__main__":
    main()
