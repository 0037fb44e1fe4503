-- Record a crash of the step holding the lease, count the attempt of the head message,
-- dead-letter it at max_attempts (unless the actor already holds max dead letters: then the
-- message stays at the head and the reply says 'full', for the caller to quarantine the
-- actor), revoke the lease and leave the actor 'crashed' for the supervisor tick to decide.
-- KEYS[1] meta  KEYS[2] mailbox  KEYS[3] crashes  KEYS[4] attempts  KEYS[5] dead
-- KEYS[6] outbox
-- ARGV[1] fencing token   ARGV[2] seq of the crashing entry (0: not tied to a message;
-- -1: the head entry, which is garbage without a sequence number of its own)
-- ARGV[3] crash record json   ARGV[4] max attempts   ARGV[5] "1": only if the lease expired
-- ARGV[6] crash records to keep   ARGV[7] max dead letters the actor may hold
-- ARGV[8] the crash's reason, counted in the type's census (census.py)
-- Returns {'crashed', crash_seq, attempt, dead (0|1), crashes_in_row, full (0|1)} | {'stale'}
local meta, mbox, crashes, attempts, dead, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local err = check_types(meta, 'hash', mbox, 'list', crashes, 'list', attempts, 'list',
                        dead, 'list', outbox, 'list')
if err then return err end
local m = redis.call('HMGET', meta, 'token', 'lease_until', 'attempt_seq', 'attempts',
                     'crash_seq', 'crashes_in_row', 'attempt_head')
err = check_int(m[1], 'token') or check_int(m[2], 'lease_until')
  or check_int(m[3], 'attempt_seq') or check_int(m[4], 'attempts')
  or check_int(m[5], 'crash_seq') or check_int(m[6], 'crashes_in_row')
if err then return err end
if m[1] ~= ARGV[1] or not m[2] then return {'stale'} end
local now = now_ms()
if ARGV[5] == '1' and tonumber(m[2]) > now then return {'stale'} end

-- Python decodes dead letters strictly: a garbage entry is kept as a JSON string of its
-- bytes if they are UTF-8, else of their Latin-1 reading (header "raw": "latin-1").
local function is_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local len, lo, hi = 1, 0x80, 0xBF
    if c < 0x80 then len = 1
    elseif c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    else return false end
    for j = i + 1, i + len - 1 do
      local cc = string.byte(s, j)
      if not cc or cc < lo or cc > hi then return false end
      lo, hi = 0x80, 0xBF
    end
    i = i + len
  end
  return true
end
local function json_text(s)
  if is_utf8(s) then return cjson.encode(s), '' end
  return '"' .. string.gsub(s, '[%z\1-\31"\\\127-\255]', function(c)
    return string.format('\\u%04x', string.byte(c))
  end) .. '"', ',"raw":"latin-1"'
end
local function is_json(s, want_object)
  local ok, value = pcall(cjson.decode, s)
  if not ok then return false end
  if want_object then return type(value) == 'table' and type(value.id) == 'string' end
  return true
end

local crash_seq = tonumber(m[5] or '0') + 1
local record = ARGV[3]
local seq = tonumber(ARGV[2])
local attempt, is_dead, is_full = 0, 0, 0
redis.call('LPUSH', crashes, record)
redis.call('LTRIM', crashes, 0, tonumber(ARGV[6]) - 1)
local head = redis.call('LINDEX', mbox, 0)
local head_seq = head and entry_seq(head)
-- As the runner reads it (mailbox.unparsed_entry): a seq is 1 to 18 digits, not zero.
local digits = head and string.match(head, '^(%d+) ')
local garbage_head = seq == -1 and head
  and (not digits or #digits > 18 or tonumber(digits) < 1)
if (seq > 0 and head_seq == seq) or garbage_head then
  -- A garbage head has no seq: its attempts are tied to its bytes instead.
  local head_id = garbage_head and redis.sha1hex(head) or ''
  if m[3] == ARGV[2] and (not garbage_head or m[7] == head_id) then
    attempt = tonumber(m[4] or '0') + 1
  else
    attempt = 1
  end
  -- The dead letter of a garbage head gets a seq of its own: negative, unique per actor.
  local letter_seq = garbage_head and -crash_seq or seq
  redis.call('RPUSH', attempts, record)
  redis.call('HSET', meta, 'attempt_seq', seq, 'attempts', attempt, 'attempt_head', head_id)
  if attempt >= tonumber(ARGV[4]) and redis.call('LLEN', dead) >= tonumber(ARGV[7]) then
    -- Never dropped: the message and its attempts stay; an operator makes room, resumes.
    is_full = 1
  elseif attempt >= tonumber(ARGV[4]) then
    local records = redis.call('LRANGE', attempts, 0, -1)
    local nl = string.find(head, '\n', 1, true)
    local sp1 = string.find(head, ' ', 1, true)
    local sp2 = sp1 and string.find(head, ' ', sp1 + 1, true)
    local sent, header, body = '0', nil, nil
    if not garbage_head and nl and sp1 and sp2 and sp2 < nl then
      sent = string.sub(head, sp1 + 1, sp2 - 1)
      header = string.sub(head, sp2 + 1, nl - 1)
      body = string.sub(head, nl + 1)
    end
    if not header or not string.match(sent, '^%d+$') or not is_json(header, true)
       or not is_json(body, false) then
      -- Not our format: keep the raw bytes, as a JSON string, for an operator to inspect.
      local raw, how = json_text(head)
      sent = '0'
      header = '{"id":"<corrupt entry ' .. letter_seq .. '>","corrupt":true' .. how .. '}'
      body = raw
    end
    redis.call('RPUSH', dead, '{"seq":' .. letter_seq .. ',"sent_at":' .. sent
      .. ',"dead_at":' .. now .. ',"header":' .. header
      .. ',"message":' .. body .. ',"crashes":[' .. table.concat(records, ',') .. ']}')
    redis.call('LPOP', mbox)
    redis.call('DEL', attempts)
    redis.call('HSET', meta, 'attempts', 0)
    if not garbage_head then redis.call('HSET', meta, 'consumed', seq) end
    redis.call('RPUSH', outbox, '{"kind":"dead","seq":' .. letter_seq .. ',"header":' .. header
      .. ',"crashes":[' .. table.concat(records, ',') .. ']}')
    is_dead = 1
  end
end
redis.call('HSET', meta, 'crash_seq', crash_seq)
redis.call('HINCRBY', KEYS[#KEYS - 6], 'crash:' .. (ARGV[8] or 'unknown'), 1)
local in_row = redis.call('HINCRBY', meta, 'crashes_in_row', 1)
redis.call('HINCRBY', meta, 'token', 1)
redis.call('HDEL', meta, 'lease_until', 'lease_owner')
redis.call('HSET', meta, 'status', 'crashed', 'crashed_at', now, 'last_crash', record, 'sched', 0)
bump_rev(meta)
return {'crashed', crash_seq, attempt, is_dead, in_row, is_full}
