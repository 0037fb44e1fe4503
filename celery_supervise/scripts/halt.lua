-- Stop or quarantine an actor from outside its steps (operator stop, supervisor stop,
-- escalation). A step in flight loses its lease: its commit will be refused.
-- KEYS[1] meta
-- ARGV[1] new status: stopped | quarantined | backoff   ARGV[2] reason
-- ARGV[3] restart delay (ms, for backoff)   ARGV[4] only from these statuses ("*" = any),
-- comma separated   ARGV[5] cause (an exit id; "" for none): the same cause halts once,
-- so two ticks applying one plan cannot restart a sibling twice
-- A backoff already pending is never shortened: a collateral restart of an actor that is
-- waiting out its own longer backoff keeps the later restart time.
-- A backoff halt of an actor whose committed step called ctx.stop() (not released yet)
-- finishes that normal stop instead.
-- Returns {'ok', previous status} | {'skip', status}
local meta = KEYS[1]
local err = check_type(meta, 'hash')
if err then return err end
local m = redis.call('HMGET', meta, 'status', 'lease_until', 'token', 'restart_at',
                     'stop_requested')
local status = m[1]
err = check_status(status) or check_int(m[2], 'lease_until') or check_int(m[3], 'token')
  or check_int(m[4], 'restart_at')
if err then return err end
if not status then return {'skip', 'missing'} end
if ARGV[4] ~= '*' and not string.find(',' .. ARGV[4] .. ',', ',' .. status .. ',', 1, true) then
  return {'skip', status}
end
if ARGV[5] ~= '' then
  if redis.call('HGET', meta, 'halt_cause') == ARGV[5] then return {'skip', status} end
  redis.call('HSET', meta, 'halt_cause', ARGV[5])
end
local now = now_ms()
if m[2] then
  redis.call('HINCRBY', meta, 'token', 1)
  redis.call('HDEL', meta, 'lease_until', 'lease_owner')
end
if ARGV[1] == 'backoff' and m[5] == '1' then
  -- A step that called ctx.stop() committed and its worker has not released yet: that
  -- normal exit came first. Finish it (as release.lua would) instead of restarting; the
  -- tick reports it to the supervisor, which restarts a permanent actor.
  redis.call('HDEL', meta, 'stop_requested')
  redis.call('HSET', meta, 'status', 'stopped', 'stopped_normally', 1, 'sched', 0,
             'stopped_at', now, 'halt_reason', 'normal')
  bump_rev(meta)
  return {'ok', status}
end
local restart_at = now + tonumber(ARGV[3])
if ARGV[1] == 'backoff' and status == 'backoff' and m[4] then
  restart_at = math.max(restart_at, tonumber(m[4]))
end
redis.call('HSET', meta, 'status', ARGV[1], 'halt_reason', ARGV[2], 'sched', 0,
           'restart_at', restart_at)
bump_rev(meta)
return {'ok', status}
