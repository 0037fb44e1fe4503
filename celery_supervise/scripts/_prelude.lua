-- Shared by every script (prepended when loaded). Times are milliseconds from Redis' own
-- clock so that workers with skewed clocks agree on lease expiry.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A mailbox entry is "<seq> <sent_ms> <header-json>\n<body-json>".
local function entry_seq(entry)
  local seq = string.match(entry, '^(%d+) ')
  if not seq then
    return redis.error_reply('CORRUPT mailbox entry does not start with a sequence number')
  end
  return tonumber(seq)
end

-- "CORRUPT ..." is the marker callers turn into CorruptActorData; any other error is not
-- ours to call corruption (out of memory, a read-only replica) and is retried.
local function corrupt(what)
  return redis.error_reply('CORRUPT ' .. what)
end

-- Redis does not undo a script's earlier writes when it fails later, so every script checks
-- everything it reads or increments *before its first write*, with the helpers below; each
-- returns nil when the value is fine, else the error reply to return.

-- A short, printable rendering of garbage for an error message.
local function shown(value)
  return (string.gsub(string.sub(tostring(value), 1, 40), '[^%w%p ]', '?'))
end

-- An integer field (false/nil: absent, fine). At most 18 digits: HINCRBY's range, and exact
-- enough for tonumber comparisons.
local function check_int(value, field)
  if value and not (string.match(value, '^-?%d+$') and #value <= 18) then
    return corrupt('meta field ' .. field .. ' is not an integer: ' .. shown(value))
  end
  return nil
end

local STATUSES = {idle = true, active = true, backoff = true, crashed = true, stopped = true,
                  quarantined = true}

local function check_status(value)
  if value and not STATUSES[value] then
    return corrupt('meta field status is not a status: ' .. shown(value))
  end
  return nil
end

-- A key that is absent or holds the expected type ('hash', 'list', 'zset', 'string').
local function check_type(key, expected)
  local t = redis.call('TYPE', key)
  if type(t) == 'table' then t = t.ok end
  if t ~= 'none' and t ~= expected then
    return corrupt(key .. ' is a ' .. t .. ', not a ' .. expected .. ' (WRONGTYPE)')
  end
  return nil
end

-- Several keys: check_types(k1, 'hash', k2, 'list', ...).
local function check_types(...)
  local args = {...}
  for i = 1, #args, 2 do
    local err = check_type(args[i], args[i + 1])
    if err then return err end
  end
  return nil
end

-- Refuse to work on a meta hash that some other program wrote.
local function check_owner(meta, type_name, key)
  local t = redis.call('HGET', meta, 'type')
  if t and (t ~= type_name or redis.call('HGET', meta, 'key') ~= key) then
    return corrupt('actor meta names another actor: ' .. shown(t))
  end
  return nil
end

-- Every change of an actor bumps 'rev': a tick that looked before the change can tell, even
-- when the change moved no sequence number (a resume, a collateral halt). Only compared for
-- equality, so a garbage value is simply replaced.
local function bump_rev(meta)
  redis.call('HSET', meta, 'rev', (tonumber(redis.call('HGET', meta, 'rev')) or 0) + 1)
end
