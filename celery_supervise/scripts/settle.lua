-- Apply the supervisor's decision about one crash, once: only while the actor is still
-- 'crashed' with the crash sequence number the decision was made for.
-- KEYS[1] meta
-- ARGV[1] crash_seq decided   ARGV[2] new status: backoff | stopped | quarantined
-- ARGV[3] restart delay (ms, for backoff)   ARGV[4] backoff level   ARGV[5] reason
-- Returns {'ok', restart_at} | {'skip', status}
local meta = KEYS[1]
local err = check_type(meta, 'hash')
if err then return err end
local m = redis.call('HMGET', meta, 'status', 'crash_seq')
err = check_status(m[1]) or check_int(m[2], 'crash_seq')
if err then return err end
if m[1] ~= 'crashed' or m[2] ~= ARGV[1] then return {'skip', m[1] or 'missing'} end
local now = now_ms()
local restart_at = now + tonumber(ARGV[3])
redis.call('HSET', meta, 'status', ARGV[2], 'backoff_level', ARGV[4], 'last_crash_at', now,
           'restart_at', restart_at, 'halt_reason', ARGV[5])
bump_rev(meta)
return {'ok', restart_at}
