-- Bring a halted actor back: automatically when its backoff is due, or by an operator.
-- KEYS[1] meta  KEYS[2] mailbox  KEYS[3] history
-- ARGV[1] mode: "due" (only a backoff whose time has come) | "force" (any halted status)
-- ARGV[2] recovery: last_good | reset   ARGV[3] initial state json (for reset)
-- ARGV[4] history length to keep   ARGV[5] "1" to clear the consecutive-crash count
-- ARGV[6] for reset: the version whose state ARGV[3] is (a rollback), or "" (initial state)
-- ARGV[7] optional fence: "status|token|version|crash_seq" as a reader saw them (absent
-- fields as ""); when given and the actor no longer matches, nothing is done (a release
-- after a replay: the replay's proof is about the actor as it was)
-- ARGV[8] for reset: the state version of ARGV[3] (kept with it), or "" (leave it)
-- Returns {'woke', version} (caller publishes a run) | {'idle', version} | {'skip', status}:
-- the version is the actor's right after the restart (a reset's own), for the caller to
-- report: a worker may commit the next step before the caller could read it back
local meta, mbox, hist = KEYS[1], KEYS[2], KEYS[3]
local err = check_types(meta, 'hash', mbox, 'list', hist, 'list')
if err then return err end
local m = redis.call('HMGET', meta, 'status', 'restart_at', 'lease_until', 'token', 'version')
local status = m[1]
err = check_status(status) or check_int(m[2], 'restart_at') or check_int(m[3], 'lease_until')
  or check_int(m[4], 'token') or check_int(m[5], 'version')
if err then return err end
if not status then return {'skip', 'missing'} end
if ARGV[7] and ARGV[7] ~= '' then
  local f = redis.call('HMGET', meta, 'crash_seq')
  local seen = status .. '|' .. (m[4] or '') .. '|' .. (m[5] or '') .. '|' .. (f[1] or '')
  if seen ~= ARGV[7] then return {'skip', 'changed'} end
end
local now = now_ms()
if ARGV[1] == 'due' then
  if status ~= 'backoff' or tonumber(m[2] or '0') > now then return {'skip', status} end
elseif status == 'idle' or status == 'active' then
  if ARGV[2] ~= 'reset' then return {'skip', status} end
end
if m[3] then
  redis.call('HINCRBY', meta, 'token', 1)
  redis.call('HDEL', meta, 'lease_until', 'lease_owner')
end
local version = tonumber(m[5] or '0')
if ARGV[2] == 'reset' then
  version = redis.call('HINCRBY', meta, 'version', 1)
  redis.call('HSET', meta, 'state', ARGV[3])
  local sv = ARGV[8] or ''
  if sv ~= '' then redis.call('HSET', meta, 'state_version', sv) end
  local keep = tonumber(ARGV[4])
  if keep > 0 then
    redis.call('LPUSH', hist, '{"version":' .. version .. ',"at":' .. now
      .. ',"reset":true' .. (ARGV[6] ~= '' and (',"rollback_of":' .. ARGV[6]) or '')
      .. (sv ~= '' and (',"state_version":' .. sv) or '')
      .. ',"state":' .. ARGV[3] .. '}')
    redis.call('LTRIM', hist, 0, keep - 1)
  end
end
if ARGV[5] == '1' then redis.call('HSET', meta, 'crashes_in_row', 0) end
redis.call('HDEL', meta, 'restart_at', 'halt_reason', 'stopped_normally', 'stop_requested')
redis.call('HSET', meta, 'restarted_at', now)
if redis.call('LLEN', mbox) > 0 then
  redis.call('HSET', meta, 'status', 'active', 'sched', 1, 'sched_at', now)
  bump_rev(meta)
  return {'woke', version}
end
redis.call('HSET', meta, 'status', 'idle', 'sched', 0)
bump_rev(meta)
return {'idle', version}
