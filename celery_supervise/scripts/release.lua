-- End a task run: give the lease back. If messages remain the actor stays scheduled and
-- the caller publishes the next run; a committed ctx.stop() stops the actor here.
-- KEYS[1] meta  KEYS[2] mailbox
-- ARGV[1] fencing token
-- Returns {'more'} | {'idle'} | {'stopped'} | {'stale'}
-- A retry of a release whose reply was lost gets the same answer (kept in 'released' as
-- "<token>:<outcome>" until the next claim), so its caller still publishes the next run.
local meta, mbox = KEYS[1], KEYS[2]
local err = check_types(meta, 'hash', mbox, 'list')
if err then return err end
local m = redis.call('HMGET', meta, 'token', 'lease_until', 'stop_requested', 'released')
err = check_int(m[2], 'lease_until')
if err then return err end
if m[1] == ARGV[1] and not m[2] and m[4] then
  local token, outcome = string.match(m[4], '^(%d+):(%a+)$')
  if token == ARGV[1] then return {outcome} end
end
if m[1] ~= ARGV[1] or not m[2] then return {'stale'} end
local now = now_ms()
redis.call('HDEL', meta, 'lease_until', 'lease_owner')
if m[3] == '1' then
  redis.call('HDEL', meta, 'stop_requested')
  redis.call('HSET', meta, 'status', 'stopped', 'stopped_normally', 1, 'sched', 0, 'stopped_at', now)
  redis.call('HSET', meta, 'released', ARGV[1] .. ':stopped')
  bump_rev(meta)
  return {'stopped'}
end
if redis.call('LLEN', mbox) > 0 then
  redis.call('HSET', meta, 'status', 'active', 'sched', 1, 'sched_at', now)
  redis.call('HSET', meta, 'released', ARGV[1] .. ':more')
  bump_rev(meta)
  return {'more'}
end
redis.call('HSET', meta, 'status', 'idle', 'sched', 0)
redis.call('HSET', meta, 'released', ARGV[1] .. ':idle')
bump_rev(meta)
return {'idle'}
