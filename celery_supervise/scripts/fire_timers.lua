-- Move due durable timers into the mailbox, in due order, and wake the actor if needed.
-- KEYS[1] meta  KEYS[2] mailbox  KEYS[3] timers
-- Returns {woke (0|1), fired, next_due_ms or -1}
local meta, mbox, timers = KEYS[1], KEYS[2], KEYS[3]
local err = check_types(meta, 'hash', mbox, 'list', timers, 'zset')
if err then return err end
local m = redis.call('HMGET', meta, 'seq', 'status')
err = check_int(m[1], 'seq') or check_status(m[2])
if err then return err end
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', timers, '-inf', now)
for i = 1, #due do
  local s = redis.call('HINCRBY', meta, 'seq', 1)
  redis.call('RPUSH', mbox, s .. ' ' .. now .. ' ' .. due[i])
  redis.call('ZREM', timers, due[i])
end
local woke = 0
local status = redis.call('HGET', meta, 'status')
if #due > 0 and (status == 'idle' or status == 'active')
   and redis.call('HGET', meta, 'sched') ~= '1' then
  redis.call('HSET', meta, 'sched', 1, 'sched_at', now, 'status', 'active')
  woke = 1
end
local nxt = redis.call('ZRANGE', timers, 0, 0, 'WITHSCORES')
local next_due = -1
if #nxt > 0 then next_due = tonumber(nxt[2]) end
bump_rev(meta)
return {woke, #due, next_due}
