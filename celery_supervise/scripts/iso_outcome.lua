-- Deliver the one outcome message of an isolated subtask, exactly once: only while the
-- subtask is still pending (a late result after a timeout finds it gone and is dropped).
-- KEYS[1] meta  KEYS[2] mailbox  KEYS[3] isolates
-- ARGV[1] isolate id   ARGV[2] header json   ARGV[3] outcome message json
-- Returns 1 if the actor must be woken, 0 if delivered to a busy/halted actor, -1 if the
-- outcome was already delivered.
local meta, mbox, isolates = KEYS[1], KEYS[2], KEYS[3]
local err = check_types(meta, 'hash', mbox, 'list', isolates, 'hash')
if err then return err end
local m = redis.call('HMGET', meta, 'seq', 'status')
err = check_int(m[1], 'seq') or check_status(m[2])
if err then return err end
if redis.call('HDEL', isolates, ARGV[1]) == 0 then return -1 end
redis.call('HDEL', isolates, ARGV[1] .. '|published', ARGV[1] .. '|heartbeat', ARGV[1] .. '|started')
local now = now_ms()
local s = redis.call('HINCRBY', meta, 'seq', 1)
redis.call('RPUSH', mbox, s .. ' ' .. now .. ' ' .. ARGV[2] .. '\n' .. ARGV[3])
local status = redis.call('HGET', meta, 'status')
if (status == 'idle' or status == 'active') and redis.call('HGET', meta, 'sched') ~= '1' then
  redis.call('HSET', meta, 'sched', 1, 'sched_at', now, 'status', 'active')
  return 1
end
return 0
