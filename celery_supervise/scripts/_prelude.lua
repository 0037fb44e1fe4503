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

local function corrupt(what)
  return redis.error_reply('CORRUPT ' .. what)
end

-- Refuse to work on a meta hash that some other program wrote.
local function check_owner(meta, type_name, key)
  local t = redis.call('HGET', meta, 'type')
  if t and (t ~= type_name or redis.call('HGET', meta, 'key') ~= key) then
    return corrupt('actor meta names another actor: ' .. tostring(t))
  end
  return nil
end
