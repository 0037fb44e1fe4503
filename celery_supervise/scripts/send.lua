-- Append messages to one actor's mailbox; wake the actor if nobody is scheduled for it.
-- KEYS[1] meta hash          KEYS[2] mailbox list
-- KEYS[3..] one dedup key per message: the caller-given id's key, or for a message relayed
-- from another actor's outbox that sender's watermark key
-- KEYS[3 + n] the tombstone a deleted actor of this name left (delete.lua): a fresh actor
-- continues its seq, version and token
-- ARGV[1] actor type   ARGV[2] actor key   ARGV[3] dedup window (s)   ARGV[4] n messages
-- ARGV[5] most messages the mailbox may hold (the type's max_mailbox; 0 = no limit)
-- ARGV[6 + 3*(i-1) ..]: header json, body json, and how to deduplicate: "0" not at all,
-- "1" by caller-given id, "2:<ordinal>" by the sender's increasing effect ordinal (relays
-- of one sender arrive in order, so one number per sender replaces remembering every id)
-- Returns {woke (0|1), seq_1, ..., seq_n, created (0|1)}; a seq is negative for a duplicate
-- caller id (it is the seq the first send got) and 0 for a duplicate relay; created is 1
-- when this send created the actor (the caller lists it in its type's index). Returns
-- {'full', queued} and writes nothing when the messages it would append do not all fit
-- under the limit (duplicates append nothing, so they never count).
local meta, mbox = KEYS[1], KEYS[2]
local err = check_types(meta, 'hash', mbox, 'list')
if err then return err end
err = check_owner(meta, ARGV[1], ARGV[2])
if err then return err end
local m = redis.call('HMGET', meta, 'seq', 'status')
err = check_int(m[1], 'seq') or check_status(m[2])
if err then return err end
local window, n, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local fresh = 0
for i = 1, n do
  -- Every dedup mark is read below: a garbage one must stop the send before its first write.
  local given = ARGV[8 + 3 * (i - 1)]
  local mark = nil
  if given ~= '0' then
    local dedup = KEYS[2 + i]
    err = check_type(dedup, 'string')
    if err then return err end
    mark = redis.call('GET', dedup)
    if mark and not (string.match(mark, '^%d+$') and #mark <= 18) then
      return corrupt(dedup .. ' holds no sequence number or ordinal: ' .. shown(mark))
    end
  end
  if not mark or (string.sub(given, 1, 2) == '2:'
                  and tonumber(mark) < tonumber(string.sub(given, 3))) then
    fresh = fresh + 1
  end
end
-- The whole batch or nothing: refused before the first write (a bounded mailbox).
if limit > 0 and fresh > 0 then
  local queued = redis.call('LLEN', mbox)
  if queued + fresh > limit then return {'full', queued} end
end
local tombstone = KEYS[3 + n]
err = check_type(tombstone, 'string')
if err then return err end
local gone = redis.call('GET', tombstone)
local seq0, version0, token0 = '0', '0', '0'
if gone then
  seq0, version0, token0 = string.match(gone, '^(%d+) (%d+) (%d+)$')
  if not seq0 or #gone > 60 then return corrupt(tombstone .. ' holds ' .. shown(gone)) end
end
-- On one server (not a cluster, where these live in other slots) the caller passes the due
-- hint and the type's ready set too, so that a send is one round trip: KEYS[4 + n] the due
-- bucket, KEYS[5 + n .. 7 + n] the type's ready set, live runs and what they took
-- (_ready.lua); ARGV[6 + 3n] the actor's member in the due index, ARGV[7 + 3n] how soon the
-- tick looks (ms), ARGV[8 + 3n] a task id for a new run, ARGV[9 + 3n] how long a run counts
-- as live (ms), ARGV[10 + 3n] how many a run takes at once, ARGV[11 + 3n] most live runs.
-- The woke flag is then 1: publish that run; 2: a live run takes the actor;
-- 3: the ready set holds garbage, so it was not touched (the caller wakes the actor as on a
-- cluster, which reports the garbage): garbage there must not stop a send.
local now = now_ms()
local fast = #ARGV > 5 + 3 * n
local ready, runs, taken, dead_runs, unusable
if fast then
  ready, runs, taken = KEYS[5 + n], KEYS[6 + n], KEYS[7 + n]
  err = check_type(KEYS[4 + n], 'zset')
  if err then return err end
  unusable = check_types(ready, 'zset', runs, 'zset', taken, 'hash')
  if not unusable then dead_runs, unusable = ready_dead(runs, taken, now) end
  redis.call('ZADD', KEYS[4 + n], 'LT', now + tonumber(ARGV[7 + 3 * n]), ARGV[6 + 3 * n])
end
local created = 0
if redis.call('HSETNX', meta, 'type', ARGV[1]) == 1 then
  created = 1
  redis.call('HSET', meta, 'key', ARGV[2], 'version', version0, 'status', 'idle',
             'token', token0, 'seq', seq0, 'consumed', seq0, 'sched', 0, 'created_at', now)
  if gone then redis.call('DEL', tombstone) end
end
local out = {0}
for i = 1, n do
  local header, body, given = ARGV[6 + 3 * (i - 1)], ARGV[7 + 3 * (i - 1)], ARGV[8 + 3 * (i - 1)]
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
  if fast and unusable then
    out[1] = 3
  elseif fast then
    ready_bury(ready, runs, taken, dead_runs, now)
    local live, take, most = tonumber(ARGV[9 + 3 * n]), tonumber(ARGV[10 + 3 * n]),
                             tonumber(ARGV[11 + 3 * n])
    if ready_push(ready, runs, taken, ARGV[2], ARGV[8 + 3 * n], now, live, take, most) == 0 then
      out[1] = 2
    end
  end
end
bump_rev(meta)
out[#out + 1] = created
return out
