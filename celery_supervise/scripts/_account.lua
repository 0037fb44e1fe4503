-- The census (census.py, docs/metrics.md): wraps every script that can change an actor's
-- status, mailbox length or dead-letter count. The script's own text runs as `body`; then
-- `account` brings the actor's share of its type's counts up to date from the actor's own
-- keys, so the counts stay exact whatever path the script took. No script file changes.
-- The last 9 KEYS of such a script: mailbox, dead letters, the shard's counters hash, then
-- the shard's status indexes in STATUS_ORDER (Keyspace.metric_keys). KEYS[1] is the meta.
-- The counters hash also counts the actors in each status ('n:<status>'), so that a
-- cluster's scrape reads one hash per slot instead of every status index.
-- What the actor contributes is recorded in its meta: 'n_status' (the index it is in),
-- 'n_mbox', 'n_dead'; an actor written before the census has none and is counted from zero
-- the first time one of these scripts touches it (or by `supervise reindex`).
local STATUS_ORDER = {'idle', 'active', 'backoff', 'crashed', 'stopped', 'quarantined'}
local STATUS_SLOT = {}
for i, s in ipairs(STATUS_ORDER) do STATUS_SLOT[s] = i end

local function census_keys()
  local n = #KEYS
  return KEYS[n - 8], KEYS[n - 7], KEYS[n - 6], n - 6
end

local function check_census()
  local mbox, dead, stats, base = census_keys()
  local err = check_types(KEYS[1], 'hash', mbox, 'list', dead, 'list', stats, 'hash')
  if err then return err end
  for i = 1, #STATUS_ORDER do
    err = check_type(KEYS[base + i], 'zset')
    if err then return err end
  end
  return nil
end

local function escaped(part)
  return (string.gsub(part, '[%%{}:]', {['%'] = '%25', ['{'] = '%7B', ['}'] = '%7D',
                                        [':'] = '%3A'}))
end

local function census_before(meta)
  return redis.call('HMGET', meta, 'type', 'key', 'n_status', 'n_mbox', 'n_dead')
end

local function account(meta, before)
  local mbox, dead, stats, base = census_keys()
  local m = redis.call('HMGET', meta, 'type', 'key', 'status', 'n_status', 'n_mbox', 'n_dead')
  if not m[1] then
    -- Gone (delete.lua): take back what it contributed, as recorded before the script.
    if before[1] then
      local slot = STATUS_SLOT[before[3] or '']
      if slot then
        redis.call('ZREM', KEYS[base + slot], escaped(before[1]) .. ':' .. escaped(before[2]))
        redis.call('HINCRBY', stats, 'n:' .. before[3], -1)
      end
      local held = tonumber(before[4] or '0') or 0
      if held ~= 0 then redis.call('HINCRBY', stats, 'mbox', -held) end
      held = tonumber(before[5] or '0') or 0
      if held ~= 0 then redis.call('HINCRBY', stats, 'dead', -held) end
    end
    return
  end
  local status, counted = m[3], m[4]
  if status ~= counted then
    local member = escaped(m[1]) .. ':' .. escaped(m[2] or '')
    local old, new = STATUS_SLOT[counted or ''], STATUS_SLOT[status or '']
    if old then
      redis.call('ZREM', KEYS[base + old], member)
      redis.call('HINCRBY', stats, 'n:' .. counted, -1)
    end
    if new then
      redis.call('ZADD', KEYS[base + new], now_ms(), member)
      redis.call('HINCRBY', stats, 'n:' .. status, 1)
      redis.call('HSET', meta, 'n_status', status)
    else
      redis.call('HDEL', meta, 'n_status')
    end
  end
  local len = redis.call('LLEN', mbox)
  local delta = len - (tonumber(m[5] or '0') or 0)
  if delta ~= 0 or not m[5] then
    if delta ~= 0 then redis.call('HINCRBY', stats, 'mbox', delta) end
    redis.call('HSET', meta, 'n_mbox', len)
  end
  len = redis.call('LLEN', dead)
  delta = len - (tonumber(m[6] or '0') or 0)
  if delta ~= 0 or not m[6] then
    if delta ~= 0 then redis.call('HINCRBY', stats, 'dead', delta) end
    redis.call('HSET', meta, 'n_dead', len)
  end
end
