-- A type's ready set and its live runs (ready.lua; send.lua on one server): the shared part.
-- ready: zset actor key -> ms added; runs: zset task id -> ms until which it counts as live;
-- taken: hash task id -> JSON list of the actors that run holds.

-- What run ``id`` holds (a JSON list of actor keys), or nil and the error reply for garbage.
local function ready_held(taken, id)
  local raw = redis.call('HGET', taken, id)
  if not raw then return {}, nil end
  local ok, keys = pcall(cjson.decode, raw)
  local fine = ok and type(keys) == 'table'
  if fine then
    for _, key in pairs(keys) do
      if type(key) ~= 'string' then fine = false end
    end
  end
  if not fine then return nil, corrupt(taken .. ' ' .. id .. ' holds ' .. shown(raw)) end
  return keys, nil
end

-- Read the runs no longer live and what they held; nothing is written. Returns the table
-- {task id = keys} or, for garbage in what one held, the error reply (before any write).
local function ready_dead(runs, taken, now)
  local gone = {}
  for _, dead in ipairs(redis.call('ZRANGEBYSCORE', runs, '-inf', now)) do
    local keys, err = ready_held(taken, dead)
    if err then return nil, err end
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

-- Wake ``key``: 1 when no run was live, or when more actors wait than the live runs take
-- at once and fewer than ``most`` runs are live (``run`` is live now, holding it: publish
-- it); else 0 (it waits in the set for a live run). So runs whose own actor takes their
-- whole time (slow steps) still leave the set to others.
local function ready_push(ready, runs, taken, key, run, now, live, take, most)
  local n = redis.call('ZCARD', runs)
  if n == 0 or (n < most and redis.call('ZCARD', ready) >= n * take) then
    redis.call('ZREM', ready, key)
    ready_start(runs, taken, run, key, now, live)
    return 1
  end
  redis.call('ZADD', ready, 'NX', now, key)
  return 0
end
