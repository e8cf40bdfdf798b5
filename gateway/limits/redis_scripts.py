"""The Lua scripts of the Redis backend: each check or settlement is one atomic EVALSHA.

All keys of one tenant share the hash tag ``{tenant}``, so a script only touches one Redis Cluster slot.
Numbers written back are formatted with ``%.0f``: Lua would otherwise print large ones as ``1.7e+15``.

Per tenant (``<p>`` = ``<prefix>:{<tenant id>}``):

* ``<p>:rpm`` / ``<p>:rpm:<key id>``: GCRA theoretical arrival time, microseconds (expires when idle)
* ``<p>:inflight``: sorted set, request id -> expiry (ms)
* ``<p>:reserved``: hash, request id -> "<reserved tokens> <key id or empty>"
* ``<p>:load``: hash, ``tokens`` -> reserved tokens in flight, ``k:<key id>`` -> the key's in-flight count
* ``<p>:used:<YYYY-MM-DD>`` / ``<p>:used:<YYYY-MM>``: tokens of requests that ended in that period
"""

from __future__ import annotations

# Shared by both scripts: drop one in-flight entry and its reservation. Returns true if it was there.
_UNLOAD = """
local function unload(inflight, reserved, load, rid)
  local v = redis.call('HGET', reserved, rid)
  redis.call('ZREM', inflight, rid)
  if not v then return false end
  local sp = string.find(v, ' ', 1, true)
  redis.call('HINCRBY', load, 'tokens', -tonumber(string.sub(v, 1, sp - 1)))
  local kid = string.sub(v, sp + 1)
  if kid ~= '' then redis.call('HINCRBY', load, 'k:' .. kid, -1) end
  redis.call('HDEL', reserved, rid)
  return true
end
"""

# KEYS: 1 tenant tat, 2 key tat, 3 inflight, 4 reserved, 5 load, 6 used day, 7 used month
# ARGV: 1 request id, 2 key id ('' = none), 3 T tenant (us), 4 burst tenant, 5 T key (0 = none), 6 burst key,
#       7 concurrency tenant, 8 concurrency key (0 = none), 9 reservation, 10 committed day,
#       11 committed month, 12 quota day, 13 quota month, 14 in-flight ttl (ms), 15 now (us; '' = server clock)
# Returns the fields of gateway.limits.backend.Outcome, in order.
ADMIT = _UNLOAD + """
local now
if ARGV[15] ~= '' then
  now = tonumber(ARGV[15])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local now_ms = math.floor(now / 1000)

local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_ms, 'LIMIT', 0, 64)
for i = 1, #expired do unload(KEYS[3], KEYS[4], KEYS[5], expired[i]) end

local function next_unit(debt, T, cap)
  if debt <= 0 then return 0 end
  local rest = (debt - cap) % T
  if rest == 0 then return T end
  return rest
end

-- allowed, new tat, remaining, retry after, next unit, remaining/next unit if nothing is taken
local function gcra(key, T, burst)
  local tat = tonumber(redis.call('GET', key) or '0')
  local base = tat
  if base < now then base = now end
  local cap = burst * T
  local debt = base + T - now
  local held = base - now
  local peek_rem = math.floor((cap - held) / T)
  local peek_next = next_unit(held, T, cap)
  if debt > cap then return false, tat, 0, debt - cap, peek_next, 0, peek_next end
  return true, base + T, math.floor((cap - debt) / T), 0, next_unit(debt, T, cap), peek_rem, peek_next
end

local key_id = ARGV[2]
local kT = tonumber(ARGV[5])
local kok, ktat, krem, kretry, knext, kprem, kpnext = true, 0, 0, 0, 0, 0, 0
if kT > 0 then kok, ktat, krem, kretry, knext, kprem, kpnext = gcra(KEYS[2], kT, tonumber(ARGV[6])) end
local ok, tat, rem, retry, nxt, prem, pnext = gcra(KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4]))

local in_flight = redis.call('ZCARD', KEYS[3])
local key_field = 'k:' .. key_id
local key_in_flight = 0
if key_id ~= '' then key_in_flight = tonumber(redis.call('HGET', KEYS[5], key_field) or '0') end
local reserved = tonumber(redis.call('HGET', KEYS[5], 'tokens') or '0')
local used_day = math.max(tonumber(ARGV[10]), tonumber(redis.call('GET', KEYS[6]) or '0')) + reserved
local used_month = math.max(tonumber(ARGV[11]), tonumber(redis.call('GET', KEYS[7]) or '0')) + reserved
local key_concurrency = tonumber(ARGV[8])

local verdict = 0
if not kok then verdict = 2
elseif not ok then verdict = 1
elseif in_flight >= tonumber(ARGV[7]) then verdict = 3
elseif key_concurrency > 0 and key_in_flight >= key_concurrency then verdict = 4
elseif used_day >= tonumber(ARGV[12]) then verdict = 5
elseif used_month >= tonumber(ARGV[13]) then verdict = 6
end

if verdict ~= 0 then
  if ok then rem, nxt = prem, pnext end
  if kT > 0 and kok then krem, knext = kprem, kpnext end
  return {verdict, rem, nxt, retry, krem, knext, kretry, in_flight, key_in_flight, used_day, used_month, reserved}
end

local ttl = tonumber(ARGV[14])
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', math.floor((tat - now) / 1000) + 1))
if kT > 0 then
  redis.call('SET', KEYS[2], string.format('%.0f', ktat), 'PX', string.format('%.0f', math.floor((ktat - now) / 1000) + 1))
end
redis.call('ZADD', KEYS[3], string.format('%.0f', now_ms + ttl), ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[9] .. ' ' .. key_id)
redis.call('HINCRBY', KEYS[5], 'tokens', ARGV[9])
if key_id ~= '' then key_in_flight = redis.call('HINCRBY', KEYS[5], key_field, 1) end
for i = 3, 5 do redis.call('PEXPIRE', KEYS[i], 2 * ttl) end
return {0, rem, nxt, 0, krem, knext, 0, in_flight + 1, key_in_flight, used_day, used_month, reserved}
"""

# KEYS: 1 inflight, 2 reserved, 3 load, 4 used day, 5 used month
# ARGV: 1 request id, 2 tokens, 3 day counter ttl (s), 4 month counter ttl (s)
# Returns 1 if this call ended the request, 0 if it was not in flight (already settled elsewhere, expired).
SETTLE = _UNLOAD + """
if not unload(KEYS[1], KEYS[2], KEYS[3], ARGV[1]) then return 0 end
local tokens = tonumber(ARGV[2])
if tokens > 0 then
  redis.call('INCRBY', KEYS[4], tokens)
  redis.call('EXPIRE', KEYS[4], ARGV[3])
  redis.call('INCRBY', KEYS[5], tokens)
  redis.call('EXPIRE', KEYS[5], ARGV[4])
end
return 1
"""

# KEYS: 1 inflight, 2 reserved, 3 load; ARGV: 1 request id, 2 ttl (ms)
# A sign of life: the entry (if still there) expires `ttl` from now, and so do the tenant's hashes.
TOUCH = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if redis.call('ZADD', KEYS[1], 'XX', 'GT', 'CH', string.format('%.0f', now_ms + ttl), ARGV[1]) == 1 then
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], 2 * ttl) end
end
return 0
"""
