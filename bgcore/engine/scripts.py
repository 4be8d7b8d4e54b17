"""The Lua scripts of the take/finish protocol (docs/engine.md).

Each script moves a job between the places it can be in, and updates RQ's
job hash and registries with it, in one atomic step and one round trip. Key
names are built in :mod:`bgcore.keys` and passed in; the only names a script
builds itself are the per-site list of a site it pops from the ring (prefix +
site), and job hashes (prefix + id), which is why bgcore does not run on Redis
Cluster (docs/engine.md says what to do instead).
"""

from __future__ import annotations

# Enqueue. KEYS: job hash, site list, ring, wake list.
# ARGV: site, job id, at_front (1/0), unique (1/0), wake cap, then the job hash as field, value pairs.
# Returns 1 when pushed, 0 when ``unique`` and a job with this id is still queued or running.
PUSH = """
if ARGV[4] == '1' then
  local status = redis.call('HGET', KEYS[1], 'status')
  if status == 'queued' or status == 'started' or status == 'scheduled' or status == 'deferred' then
    return 0
  end
  if status then redis.call('DEL', KEYS[1]) end
end
if #ARGV > 5 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 6))
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

# Take the next job: the first queue (priority order) whose ring is not empty; in it, the site at
# the head of the ring (which then goes to the tail if it has more jobs waiting).
# KEYS: processing list, worker hash, then ring_1..ring_n, started_1..started_n, wake_1..wake_n.
# ARGV: n, now (epoch seconds), started_at (RQ time format), worker name, job hash prefix,
#       registry grace seconds, then site-list prefix_1..prefix_n, default timeout_1..timeout_n.
# Returns {queue index, job id, job hash as a flat list}, or nil (then the wake lists are cleared:
# every token in them is stale, since every ring is empty at this instant), or {0} when the 100 ids
# a call may look at were all skipped while that queue still has ids waiting: the caller takes again
# (each call stays O(1); returning nil there would tell a burst worker the queues are empty).
# An id is skipped (dropped) unless its job is still 'queued': deleted, or cancelled with RQ's
# Job.cancel(), which must never run.
TAKE = """
local n = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
for i = 1, n do
  local ring = KEYS[2 + i]
  local drained = false
  for _ = 1, 100 do
    local site = redis.call('LPOP', ring)
    if not site then drained = true break end
    local list = ARGV[6 + i] .. site
    local id = redis.call('LPOP', list)
    if redis.call('LLEN', list) > 0 then redis.call('RPUSH', ring, site) end
    if id then
      local key = ARGV[5] .. id
      if redis.call('HGET', key, 'status') == 'queued' then
        local timeout = tonumber(redis.call('HGET', key, 'timeout') or '') or tonumber(ARGV[6 + n + i])
        if timeout < 0 then timeout = 365 * 24 * 3600 end
        redis.call('HSET', key, 'status', 'started', 'started_at', ARGV[3], 'worker_name', ARGV[4])
        redis.call('ZADD', KEYS[2 + n + i], now + timeout + tonumber(ARGV[6]), id .. ':' .. ARGV[4])
        redis.call('LPUSH', KEYS[1], id)
        if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'state', 'busy', 'current_job', id) end
        return {i, id, redis.call('HGETALL', key)}
      end
    end
  end
  if not drained then return {0} end
end
for i = 1, n do redis.call('DEL', KEYS[2 + 2 * n + i]) end
return nil
"""

# End a job this worker took. KEYS: job hash, started registry, target registry (finished or
# failed), processing list, result stream, worker hash.
# ARGV: worker name, job id, now, ended_at, ttl (-1 = for ever, 0 = delete the job at once),
#       outcome ('finished' | 'failed'), duration seconds, then the Result entry as field, value pairs.
# Only a job still ``started`` by this worker is ended (returns 1); otherwise (someone failed or
# deleted it meanwhile) only this worker's traces are cleared (returns 0).
FINISH = """
local composite = ARGV[2] .. ':' .. ARGV[1]
redis.call('ZREM', KEYS[2], composite)
redis.call('LREM', KEYS[4], 0, ARGV[2])
local registered = redis.call('EXISTS', KEYS[6]) == 1
if registered then redis.call('HSET', KEYS[6], 'state', 'idle', 'current_job', '') end
local status = redis.call('HGET', KEYS[1], 'status')
local owner = redis.call('HGET', KEYS[1], 'worker_name')
if status ~= 'started' or owner ~= ARGV[1] then return 0 end
local outcome = ARGV[6]
if registered then
  if outcome == 'finished' then
    redis.call('HINCRBY', KEYS[6], 'successful_job_count', 1)
  else
    redis.call('HINCRBY', KEYS[6], 'failed_job_count', 1)
  end
  redis.call('HINCRBYFLOAT', KEYS[6], 'total_working_time', ARGV[7])
end
local ttl = tonumber(ARGV[5])
if ttl == 0 then
  redis.call('DEL', KEYS[1], KEYS[5])
  return 1
end
redis.call('HSET', KEYS[1], 'status', outcome, 'ended_at', ARGV[4])
redis.call('XADD', KEYS[5], 'MAXLEN', '10', '*', unpack(ARGV, 8))
if ttl > 0 then
  redis.call('ZADD', KEYS[3], tonumber(ARGV[3]) + ttl, ARGV[2])
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[5], ttl)
else
  redis.call('ZADD', KEYS[3], '+inf', ARGV[2])
  redis.call('PERSIST', KEYS[1])
end
return 1
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

# Remove a site's queued jobs from one queue. KEYS: site list, ring. ARGV: site, job hash prefix.
# Returns the removed ids. A job hash is deleted only while it is still queued.
PURGE = """
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
redis.call('LREM', KEYS[2], 0, ARGV[1])
for _, id in ipairs(ids) do
  local key = ARGV[2] .. id
  if redis.call('HGET', key, 'status') == 'queued' then redis.call('DEL', key) end
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
