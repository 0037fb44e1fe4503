-- Record a crash of the step holding the lease, count the attempt of the head message,
-- dead-letter it at max_attempts, revoke the lease and leave the actor 'crashed' for the
-- supervisor tick to decide.
-- KEYS[1] meta  KEYS[2] mailbox  KEYS[3] crashes  KEYS[4] attempts  KEYS[5] dead
-- KEYS[6] outbox
-- ARGV[1] fencing token   ARGV[2] seq of the crashing entry (0: not tied to a message)
-- ARGV[3] crash record json   ARGV[4] max attempts   ARGV[5] "1": only if the lease expired
-- ARGV[6] crash records to keep
-- Returns {'crashed', crash_seq, attempt, dead (0|1), crashes_in_row} | {'stale'}
local meta, mbox, crashes, attempts, dead, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local m = redis.call('HMGET', meta, 'token', 'lease_until', 'attempt_seq', 'attempts')
if m[1] ~= ARGV[1] or not m[2] then return {'stale'} end
local now = now_ms()
if ARGV[5] == '1' and tonumber(m[2]) > now then return {'stale'} end
local record = ARGV[3]
redis.call('LPUSH', crashes, record)
redis.call('LTRIM', crashes, 0, tonumber(ARGV[6]) - 1)
local seq = tonumber(ARGV[2])
local attempt, is_dead = 0, 0
local head = redis.call('LINDEX', mbox, 0)
if seq > 0 and head and entry_seq(head) == seq then
  if m[3] == ARGV[2] then attempt = tonumber(m[4] or '0') + 1 else attempt = 1 end
  redis.call('RPUSH', attempts, record)
  redis.call('HSET', meta, 'attempt_seq', seq, 'attempts', attempt)
  if attempt >= tonumber(ARGV[4]) then
    local records = redis.call('LRANGE', attempts, 0, -1)
    local nl = string.find(head, '\n', 1, true)
    local sp1 = string.find(head, ' ', 1, true)
    local sp2 = sp1 and string.find(head, ' ', sp1 + 1, true)
    local sent, header, body = '0', nil, nil
    if nl and sp1 and sp2 and sp2 < nl then
      sent = string.sub(head, sp1 + 1, sp2 - 1)
      header = string.sub(head, sp2 + 1, nl - 1)
      body = string.sub(head, nl + 1)
    end
    if not header or not tonumber(sent) then
      -- Not our format: keep the raw bytes, as a JSON string, for an operator to inspect.
      sent = '0'
      header = '{"id":"<corrupt entry ' .. seq .. '>","corrupt":true}'
      body = cjson.encode(head)
    end
    redis.call('RPUSH', dead, '{"seq":' .. seq .. ',"sent_at":' .. sent
      .. ',"dead_at":' .. now .. ',"header":' .. header
      .. ',"message":' .. body .. ',"crashes":[' .. table.concat(records, ',') .. ']}')
    redis.call('LPOP', mbox)
    redis.call('DEL', attempts)
    redis.call('HSET', meta, 'consumed', seq, 'attempts', 0)
    redis.call('RPUSH', outbox, '{"kind":"dead","seq":' .. seq .. ',"header":' .. header
      .. ',"crashes":[' .. table.concat(records, ',') .. ']}')
    is_dead = 1
  end
end
local crash_seq = redis.call('HINCRBY', meta, 'crash_seq', 1)
local in_row = redis.call('HINCRBY', meta, 'crashes_in_row', 1)
redis.call('HINCRBY', meta, 'token', 1)
redis.call('HDEL', meta, 'lease_until', 'lease_owner')
redis.call('HSET', meta, 'status', 'crashed', 'crashed_at', now, 'last_crash', record, 'sched', 0)
return {'crashed', crash_seq, attempt, is_dead, in_row}
