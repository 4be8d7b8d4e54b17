"""The Lua scripts of the take/finish protocol (docs/engine.md).

Each script moves a job between the places it can be in, and updates RQ's
job hash and registries with it, in one atomic step and one round trip. Key
names are built in :mod:`bgcore.keys` and passed in; the only names a script
builds itself are the per-site list of a site it pops from the ring (prefix +
site), and job hashes (prefix + id), which is why bgcore does not run on Redis
Cluster (docs/engine.md says what to do instead).
"""

from __future__ import annotations

# Enqueue. KEYS: job hash, site list, ring, wake list, scheduled set.
# ARGV: site, job id, at_front (1/0), unique (1/0), wake cap, due (epoch seconds; 0 = now), then the
#       job hash as field, value pairs.
# Returns 1 when pushed, 0 when ``unique`` and a job with this id is still queued, scheduled or running.
# A job with a due time waits in the queue's scheduled set (member "<site> <id>", score = due,
# status 'scheduled'); every take moves the due ones to their sites' lists (see _PROMOTE).
PUSH = """
if ARGV[4] == '1' then
  local status = redis.call('HGET', KEYS[1], 'status')
  if status == 'queued' or status == 'started' or status == 'scheduled' or status == 'deferred' then
    return 0
  end
  if status then redis.call('DEL', KEYS[1]) end
end
if #ARGV > 6 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 7))
end
local due = tonumber(ARGV[6])
if due > 0 then
  redis.call('HSET', KEYS[1], 'status', 'scheduled')
  redis.call('ZADD', KEYS[5], due, ARGV[1] .. ' ' .. ARGV[2])
  redis.call('RPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], -tonumber(ARGV[5]), -1)
  return 1
end
local depth
if ARGV[3] == '1' then
  depth = redis.call('LPUSH', KEYS[2], ARGV[2])
  if depth == 1 then redis.call('LPUSH', KEYS[3], ARGV[1]) end
else
  depth = redis.call('RPUSH', KEYS[2], ARGV[2])
  if depth == 1 then redis.call('RPUSH', KEYS[3], ARGV[1]) end
end
redis.call('RPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], -tonumber(ARGV[5]), -1)
return 1
"""

# Move up to 100 due jobs of one queue from its scheduled set to their sites' lists (atomically:
# exactly one caller moves each). ``key_prefix`` names job hashes; a member whose job is no longer
# 'scheduled' (deleted, cancelled) is dropped.
_PROMOTE = """
local function promote(scheduled, ring, list_prefix, key_prefix, now)
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 100)
  for _, member in ipairs(due) do
    redis.call('ZREM', scheduled, member)
    local space = string.find(member, ' ', 1, true)
    local site, id = string.sub(member, 1, space - 1), string.sub(member, space + 1)
    local key = key_prefix .. id
    if redis.call('HGET', key, 'status') == 'scheduled' then
      redis.call('HSET', key, 'status', 'queued')
      if redis.call('RPUSH', list_prefix .. site, id) == 1 then redis.call('RPUSH', ring, site) end
    end
  end
end
"""

# Take the next job: the first queue (priority order) whose ring is not empty; in it, the site at
# the head of the ring (which then goes to the tail if it has more jobs waiting). Due delayed jobs
# are moved to their lists first.
# K: processing list, then ring_1..ring_n, started_1..started_n, wake_1..wake_n, scheduled_1..n,
#    the bench's held sites (hold_jobs): their turns pass, their jobs stay queued.
# A: n, now (epoch seconds), started_at (RQ time format), worker name, job hash prefix,
#    registry grace seconds, then site-list prefix_1..prefix_n, default timeout_1..timeout_n.
# Returns {queue index, job id, data, timeout, result_ttl, failure_ttl, number_of_retries} (the job
# hash's fields the worker needs, missing ones nil), or {-1, next due} when nothing can be taken
# but a delayed job waits, or nil (then the wake lists are cleared: every token in them is stale, since every ring
# is empty at this instant), or {0} when the 100 ids a call may look at were all skipped while that
# queue still has ids waiting: the caller takes again (each call stays O(1); returning nil there
# would tell a burst worker the queues are empty).
# An id is skipped (dropped) unless its job is still 'queued': deleted, or cancelled with RQ's
# Job.cancel(), which must never run.
_TAKE = """
local function take(K, A)
  local n = tonumber(A[1])
  local now = tonumber(A[2])
  for i = 1, n do
    promote(K[1 + 3 * n + i], K[1 + i], A[6 + i], A[5], now)
  end
  local held = K[2 + 4 * n]
  local holding = redis.call('SCARD', held) > 0
  for i = 1, n do
    local ring = K[1 + i]
    local drained = false
    local passed, waiting = 0, 0
    if holding then waiting = redis.call('LLEN', ring) end
    for _ = 1, 100 do
      local site = redis.call('LPOP', ring)
      if not site then drained = true break end
      if holding and redis.call('SISMEMBER', held, site) == 1 then
        redis.call('RPUSH', ring, site)  -- a held site's turn passes; its jobs stay queued
        passed = passed + 1
        if passed >= waiting then drained = true break end  -- every site left is held
      else
        local list = A[6 + i] .. site
        local id = redis.call('LPOP', list)
        if redis.call('LLEN', list) > 0 then redis.call('RPUSH', ring, site) end
        if id then
          local key = A[5] .. id
          local got = redis.call('HMGET', key, 'status', 'timeout', 'data', 'result_ttl', 'failure_ttl',
                                 'number_of_retries')
          if got[1] == 'queued' then
            local timeout = tonumber(got[2] or '') or tonumber(A[6 + n + i])
            if timeout < 0 then timeout = 365 * 24 * 3600 end
            redis.call('HSET', key, 'status', 'started', 'started_at', A[3], 'worker_name', A[4])
            redis.call('ZADD', K[1 + n + i], now + timeout + tonumber(A[6]), id .. ':' .. A[4])
            redis.call('LPUSH', K[1], id)
            return {i, id, got[3], got[2], got[4], got[5], got[6]}
          end
        end
      end
    end
    if not drained then return {0} end
  end
  for i = 1, n do redis.call('DEL', K[1 + 2 * n + i]) end
  local next_due
  for i = 1, n do
    local first = redis.call('ZRANGE', K[1 + 3 * n + i], 0, 0, 'WITHSCORES')
    if first[2] and (next_due == nil or tonumber(first[2]) < next_due) then next_due = tonumber(first[2]) end
  end
  if next_due then return {-1, tostring(next_due)} end
  return nil
end
"""

# End a job this worker took. K: job hash, started registry, target registry (finished or
# failed), processing list, result stream, site list, ring, wake list, scheduled set, the site's
# failed index (a failed job is added to it with its failed-registry score; see docs/engine.md).
# A: worker name, job id, now, ended_at, ttl (-1 = for ever, 0 = delete the job at once),
#    outcome ('finished' | 'failed' | 'retry'), retry at (epoch seconds; for 'retry'), site,
#    then the Result entry as field, value pairs.
# 'retry' puts the job back (its list now, or the scheduled set for later), counts the attempt in
# number_of_retries, and records a RETRIED result; it goes to no registry.
# Only a job still ``started`` by this worker is ended (returns 1); otherwise (someone failed or
# deleted it meanwhile) only this worker's traces are cleared (returns 0).
_FINISH = """
local function finish(K, A)
  redis.call('ZREM', K[2], A[2] .. ':' .. A[1])
  redis.call('LREM', K[4], 0, A[2])
  local owned = redis.call('HMGET', K[1], 'status', 'worker_name')
  if owned[1] ~= 'started' or owned[2] ~= A[1] then return 0 end
  if A[6] == 'retry' then
    redis.call('HINCRBY', K[1], 'number_of_retries', 1)
    redis.call('XADD', K[5], 'MAXLEN', '10', '*', unpack(A, 9))
    local at = tonumber(A[7])
    if at > tonumber(A[3]) then
      redis.call('HSET', K[1], 'status', 'scheduled', 'ended_at', A[4])
      redis.call('ZADD', K[9], at, A[8] .. ' ' .. A[2])
    else
      redis.call('HSET', K[1], 'status', 'queued', 'ended_at', A[4])
      if redis.call('RPUSH', K[6], A[2]) == 1 then redis.call('RPUSH', K[7], A[8]) end
    end
    redis.call('RPUSH', K[8], '1')
    return 1
  end
  local ttl = tonumber(A[5])
  if ttl == 0 then
    redis.call('DEL', K[1], K[5])
    return 1
  end
  redis.call('HSET', K[1], 'status', A[6], 'ended_at', A[4])
  redis.call('XADD', K[5], 'MAXLEN', '10', '*', unpack(A, 9))
  local score = '+inf'
  if ttl > 0 then
    score = tonumber(A[3]) + ttl
    redis.call('EXPIRE', K[1], ttl)
    redis.call('EXPIRE', K[5], ttl)
  else
    redis.call('PERSIST', K[1])
  end
  redis.call('ZADD', K[3], score, A[2])
  if A[6] == 'failed' and A[8] ~= '' then redis.call('ZADD', K[10], score, A[2]) end
  return 1
end
"""

_SLICE = """
local function slice(t, first, last)
  local out = {}
  for i = first, last do out[#out + 1] = t[i] end
  return out
end
"""

TAKE = _PROMOTE + _TAKE + "return take(KEYS, ARGV)\n"
FINISH = _FINISH + "return finish(KEYS, ARGV)\n"

# A busy worker's steady state: end the job it ran and take the next one in one round trip.
# KEYS: FINISH's 10 keys, then TAKE's. ARGV: m (the number of FINISH's arguments), FINISH's m
# arguments, then TAKE's. Returns {finished (1/0), TAKE's answer (or false for nil)}.
FINISH_TAKE = _PROMOTE + _TAKE + _FINISH + _SLICE + """
local m = tonumber(ARGV[1])
local ended = finish(slice(KEYS, 1, 10), slice(ARGV, 2, m + 1))
local taken = take(slice(KEYS, 11, #KEYS), slice(ARGV, m + 2, #ARGV))
return {ended, taken or false}
"""

# Put a job this worker took back at the head of its site's list (taken, not started).
# KEYS: job hash, started registry, processing list, site list, ring, wake list.
# ARGV: worker name, job id, site. Returns 1 when requeued, 0 when the job was not ours any more.
REQUEUE = """
redis.call('ZREM', KEYS[2], ARGV[2] .. ':' .. ARGV[1])
redis.call('LREM', KEYS[3], 0, ARGV[2])
if redis.call('HGET', KEYS[1], 'status') ~= 'started' or redis.call('HGET', KEYS[1], 'worker_name') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'started_at', '', 'worker_name', '')
if redis.call('LPUSH', KEYS[4], ARGV[2]) == 1 then redis.call('LPUSH', KEYS[5], ARGV[3]) end
redis.call('RPUSH', KEYS[6], '1')
return 1
"""

# A failed job back to its queue (``bgcore jobs requeue``), or gone (``bgcore jobs delete``).
# KEYS: job hash, failed registry, site list, ring, wake list, result stream, the site's failed index.
# ARGV: job id, site, 'requeue' | 'delete'. Only a job that is still 'failed' is touched (returns 1,
# else 0; a stale index entry of a job that is no longer failed is dropped either way).
FAILED_JOB = """
redis.call('ZREM', KEYS[7], ARGV[1])
if redis.call('HGET', KEYS[1], 'status') ~= 'failed' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] == 'delete' then
  redis.call('DEL', KEYS[1], KEYS[6])
  return 1
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'started_at', '', 'ended_at', '', 'worker_name', '',
           'number_of_retries', 0)
redis.call('PERSIST', KEYS[1])
if redis.call('RPUSH', KEYS[3], ARGV[1]) == 1 then redis.call('RPUSH', KEYS[4], ARGV[2]) end
redis.call('RPUSH', KEYS[5], '1')
return 1
"""

# Remove a site's queued and delayed jobs from one queue. KEYS: site list, ring, scheduled set.
# ARGV: site, job hash prefix. Returns the removed ids. A job hash is deleted only while it is still
# queued or scheduled. (The scheduled set is scanned: a purge costs O(delayed jobs of the queue).)
PURGE = """
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
redis.call('LREM', KEYS[2], 0, ARGV[1])
local prefix = ARGV[1] .. ' '
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if string.sub(member, 1, #prefix) == prefix then
    redis.call('ZREM', KEYS[3], member)
    ids[#ids + 1] = string.sub(member, #prefix + 1)
  end
end
for _, id in ipairs(ids) do
  local key = ARGV[2] .. id
  local status = redis.call('HGET', key, 'status')
  if status == 'queued' or status == 'scheduled' then redis.call('DEL', key) end
end
return ids
"""

# Depth of a queue per site. KEYS: ring. ARGV: site-list prefix. Returns {site, depth, ...}.
DEPTHS = """
local out = {}
for _, site in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = site
  out[#out + 1] = redis.call('LLEN', ARGV[1] .. site)
end
return out
"""

# Sizes of many sorted sets in one call (the sites table's failed counts). KEYS: the sets.
# Returns their ZCARDs in order. One command to pack and one array to read, however many sets.
ZCARDS = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('ZCARD', key) end
return out
"""
