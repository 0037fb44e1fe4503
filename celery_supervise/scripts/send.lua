-- Append messages to one actor's mailbox; wake the actor if nobody is scheduled for it.
-- KEYS[1] meta hash          KEYS[2] mailbox list
-- KEYS[3..] one dedup key per message: the caller-given id's key, or for a message relayed
-- from another actor's outbox that sender's watermark key
-- ARGV[1] actor type   ARGV[2] actor key   ARGV[3] dedup window (s)   ARGV[4] n messages
-- ARGV[5 + 3*(i-1) ..]: header json, body json, and how to deduplicate: "0" not at all,
-- "1" by caller-given id, "2:<ordinal>" by the sender's increasing effect ordinal (relays
-- of one sender arrive in order, so one number per sender replaces remembering every id)
-- Returns {woke (0|1), seq_1, ..., seq_n, created (0|1)}; a seq is negative for a
-- duplicate caller id (it is the seq the first send got) and 0 for a duplicate relay;
-- created is 1 when this send created the actor (the caller adds it to its type's index).
local meta, mbox = KEYS[1], KEYS[2]
local err = check_types(meta, 'hash', mbox, 'list')
if err then return err end
err = check_owner(meta, ARGV[1], ARGV[2])
if err then return err end
local m = redis.call('HMGET', meta, 'seq', 'status')
err = check_int(m[1], 'seq') or check_status(m[2])
if err then return err end
local window, n = tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, n do
  -- Every dedup mark is read below: a garbage one must stop the send before its first write.
  if ARGV[7 + 3 * (i - 1)] ~= '0' then
    local dedup = KEYS[2 + i]
    err = check_type(dedup, 'string')
    if err then return err end
    local mark = redis.call('GET', dedup)
    if mark and not (string.match(mark, '^%d+$') and #mark <= 18) then
      return corrupt(dedup .. ' holds no sequence number or ordinal: ' .. shown(mark))
    end
  end
end
local now = now_ms()
local created = 0
if redis.call('HSETNX', meta, 'type', ARGV[1]) == 1 then
  created = 1
  redis.call('HSET', meta, 'key', ARGV[2], 'version', 0, 'status', 'idle', 'token', 0,
             'seq', 0, 'consumed', 0, 'sched', 0, 'created_at', now)
end
local out = {0}
for i = 1, n do
  local header, body, given = ARGV[5 + 3 * (i - 1)], ARGV[6 + 3 * (i - 1)], ARGV[7 + 3 * (i - 1)]
  local dedup = KEYS[2 + i]
  local prior, ordinal = nil, nil
  if given == '1' then
    prior = redis.call('GET', dedup)
  elseif string.sub(given, 1, 2) == '2:' then
    ordinal = tonumber(string.sub(given, 3))
    local mark = redis.call('GET', dedup)
    if mark and tonumber(mark) >= ordinal then prior = '0' end
  end
  if prior then
    out[#out + 1] = -tonumber(prior)
  else
    local seq = redis.call('HINCRBY', meta, 'seq', 1)
    redis.call('RPUSH', mbox, seq .. ' ' .. now .. ' ' .. header .. '\n' .. body)
    if given == '1' then redis.call('SET', dedup, seq, 'EX', window) end
    if ordinal then redis.call('SET', dedup, ordinal, 'EX', window) end
    out[#out + 1] = seq
  end
end
local status = redis.call('HGET', meta, 'status')
if (status == 'idle' or status == 'active') and redis.call('HGET', meta, 'sched') ~= '1'
   and redis.call('LLEN', mbox) > 0 then
  redis.call('HSET', meta, 'sched', 1, 'sched_at', now, 'status', 'active')
  out[1] = 1
end
bump_rev(meta)
out[#out + 1] = created
return out
