-- Extend the lease of a running step, only for the current token holder.
-- KEYS[1] meta   ARGV[1] fencing token   ARGV[2] lease (ms)
-- Returns the new lease expiry (ms) or 0 if the lease was lost -- superseded, or expired
-- (a worker paused past its lease does not get it back by waking up).
local err = check_type(KEYS[1], 'hash')
if err then return err end
local m = redis.call('HMGET', KEYS[1], 'token', 'lease_until')
err = check_int(m[2], 'lease_until')
if err then return err end
if m[1] ~= ARGV[1] or not m[2] then return 0 end
local now = now_ms()
if tonumber(m[2]) <= now then return 0 end
local until_ms = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lease_until', until_ms)
return until_ms
