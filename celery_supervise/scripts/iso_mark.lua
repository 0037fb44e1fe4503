-- Update the pending record of an isolated subtask if it is still pending.
-- KEYS[1] isolates   ARGV[1] isolate id   ARGV[2] field   ARGV[3] "now" or a value
-- ARGV[4] "1": only if the field is absent (claim the right to publish / start once)
-- Returns 1 if updated, 0 if the field was already set, -1 if no longer pending.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return -1 end
local rec = cjson.decode(raw)
if ARGV[4] == '1' and rec[ARGV[2]] then return 0 end
local value = ARGV[3]
if value == 'now' then value = now_ms() end
rec[ARGV[2]] = value
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return 1
