-- A type's ready set and its live runs (ready.lua; send.lua on one server): the shared part.
-- ready: zset actor key -> ms added; runs: zset task id -> ms until which it counts as live;
-- taken: hash task id -> JSON list of the actors that run holds.

-- Read the runs no longer live and what they held; nothing is written. Returns the table
-- {task id = keys} or, for garbage in what one held, the error reply (before any write).
local function ready_dead(runs, taken, now)
  local gone = {}
  for _, dead in ipairs(redis.call('ZRANGEBYSCORE', runs, '-inf', now)) do
    local raw = redis.call('HGET', taken, dead)
    local ok, keys = pcall(cjson.decode, raw or '[]')
    if not ok or type(keys) ~= 'table' then
      return nil, corrupt(taken .. ' ' .. dead .. ' holds ' .. shown(raw))
    end
    gone[dead] = keys
  end
  return gone, nil
end

-- The runs ready_dead found are no longer live: what they held goes back to the set.
local function ready_bury(ready, runs, taken, gone, now)
  for dead, keys in pairs(gone) do
    for _, key in ipairs(keys) do redis.call('ZADD', ready, 'NX', now, key) end
    redis.call('HDEL', taken, dead)
  end
  redis.call('ZREMRANGEBYSCORE', runs, '-inf', now)
end

-- Run ``id`` is live from now, holding ``key``.
local function ready_start(runs, taken, id, key, now, live)
  redis.call('ZADD', runs, now + live, id)
  redis.call('HSET', taken, id, cjson.encode({key}))
end

-- Wake ``key``: 1 when no run was live (``run`` is now, holding it: publish it), else 0
-- (it waits in the set for a live run).
local function ready_push(ready, runs, taken, key, run, now, live)
  if redis.call('ZCARD', runs) == 0 then
    redis.call('ZREM', ready, key)
    ready_start(runs, taken, run, key, now, live)
    return 1
  end
  redis.call('ZADD', ready, 'NX', now, key)
  return 0
end
