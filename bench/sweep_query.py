# The sweep's query (services/src/sweep.rs, entity/src/lookup.rs::stuck_messages) on a large
# messages table, with and without its primary-key range, through Python's sqlite3:
#
#   DATABASE_URL=sqlite:///tmp/sweep/sb.db SECRET_KEY=$(openssl rand -hex 32) \
#     ./target/release/switchboard migrate
#   python3 bench/sweep_query.py /tmp/sweep/sb.db 1000000
#
# Fills `messages` to N rows (once) spread over a year, 1% inside the sweep's 72 h window, all
# settled, then times the query 5 times each way and prints SQLite's plan.
import os, sqlite3, sys, time, uuid, random
db = sys.argv[1]; n = int(sys.argv[2])
con = sqlite3.connect(db)
con.execute("PRAGMA journal_mode=WAL")
now_ms = int(time.time() * 1000)
year = 365 * 24 * 3600 * 1000
window = 72 * 3600 * 1000
def v7(ms):
    b = bytearray(os.urandom(16))
    b[0:6] = ms.to_bytes(6, "big"); b[6] = 0x70 | (b[6] & 0x0F); b[8] = 0x80 | (b[8] & 0x3F)
    return bytes(b)
def ts(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + ".%06d+00:00" % ((ms % 1000) * 1000)
if con.execute("SELECT count(*) FROM messages").fetchone()[0] < n:
    tenant = os.urandom(16); conv = os.urandom(16); contact = os.urandom(16)
    rows = []
    for i in range(n):
        ms = now_ms - window + random.randrange(window) if i % 100 == 0 else now_ms - window - random.randrange(year)
        inbound = i % 2 == 0
        rows.append((v7(ms), tenant, conv, contact, "inbound" if inbound else "outbound",
                     "customer" if inbound else "bot", "Is anyone available today? " * 2, None,
                     "SM" + uuid.uuid4().hex, "received" if inbound else "delivered", None, None, None,
                     1, "gsm7", 0 if inbound else 1, ts(ms) if inbound else None, None, 0, ts(ms), ts(ms), None))
        if len(rows) == 50000:
            con.executemany("INSERT INTO messages (id, tenant_id, conversation_id, contact_id, direction, source, body, media, provider_sid, status, error_code, error_message, idempotency_key, segments, encoding, attempts, handled_at, compliance, provider_replied, created_at, updated_at, sent_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            con.commit(); rows = []
    if rows:
        con.executemany("INSERT INTO messages (id, tenant_id, conversation_id, contact_id, direction, source, body, media, provider_sid, status, error_code, error_message, idempotency_key, segments, encoding, attempts, handled_at, compliance, provider_replied, created_at, updated_at, sent_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        con.commit()
cond = "updated_at < ? AND ((direction = 'inbound' AND handled_at IS NULL) OR (direction = 'outbound' AND (status = 'queued' OR (status = 'sending' AND provider_sid IS NULL)))) ORDER BY updated_at ASC LIMIT 1000"
before = ts(now_ms - 360_000)
floor = (now_ms - window).to_bytes(6, "big") + bytes([0x70, 0]) + bytes([0x80]) + bytes(7)
full = "SELECT * FROM messages WHERE " + cond
ranged = "SELECT * FROM messages WHERE id >= ? AND " + cond
for name, q, args in [("full scan", full, (before,)), ("id range", ranged, (floor, before))]:
    plan = [r[3] for r in con.execute("EXPLAIN QUERY PLAN " + q, args)]
    times = []
    for _ in range(5):
        t = time.perf_counter(); con.execute(q, args).fetchall(); times.append((time.perf_counter() - t) * 1000)
    print(f"{name}: median {sorted(times)[2]:.1f} ms of 5 (min {min(times):.1f}); plan {plan}")
print("rows:", con.execute("SELECT count(*) FROM messages").fetchone()[0], "sqlite", sqlite3.sqlite_version)
