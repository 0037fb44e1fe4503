-- Repair a scheduled marker whose Celery task was lost (its worker died holding it, or the
-- broker dropped it): claim the right to publish a new run, at most once per min_age.
-- KEYS[1] meta  KEYS[2] mailbox
-- ARGV[1] minimum age of the marker (ms), doubled for each repair already made
-- ARGV[2] the longest that age grows to (ms)
-- Returns 1 if the caller should publish a run, else 0.
local meta, mbox = KEYS[1], KEYS[2]
local err = check_types(meta, 'hash', mbox, 'list')
if err then return err end
local m = redis.call('HMGET', meta, 'status', 'sched', 'sched_at', 'lease_until', 'rewakes')
err = check_status(m[1]) or check_int(m[3], 'sched_at') or check_int(m[4], 'lease_until')
  or check_int(m[5], 'rewakes')
if err then return err end
if m[1] ~= 'idle' and m[1] ~= 'active' then return 0 end
if m[4] then return 0 end
if redis.call('LLEN', mbox) == 0 then return 0 end
local now = now_ms()
local rewakes = tonumber(m[5] or '0')
local min_age = math.min(tonumber(ARGV[1]) * (2 ^ rewakes), tonumber(ARGV[2]))
if m[2] == '1' and now - tonumber(m[3] or '0') < min_age then return 0 end
redis.call('HSET', meta, 'status', 'active', 'sched', 1, 'sched_at', now, 'rewakes', rewakes + 1)
bump_rev(meta)
return 1
