-- Mark a pending isolated subtask (published at / last heartbeat) if it is still pending.
-- The pending record itself (field <id>) is written once by the commit and never rewritten
-- here: decoding and re-encoding it in Lua would mangle its arguments (cjson turns big
-- integers into floats and [] into {}). Marks live beside it in field "<id>|<name>".
-- KEYS[1] isolates   ARGV[1] isolate id   ARGV[2] mark name   ARGV[3] "now" or a value
-- ARGV[4] "1": only if the mark is absent (claim the right to publish once)
-- Returns 1 if updated, 0 if the mark was already set, -1 if no longer pending.
local err = check_type(KEYS[1], 'hash')
if err then return err end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local field = ARGV[1] .. '|' .. ARGV[2]
if ARGV[4] == '1' and redis.call('HEXISTS', KEYS[1], field) == 1 then return 0 end
local value = ARGV[3]
if value == 'now' then value = now_ms() end
redis.call('HSET', KEYS[1], field, value)
if ARGV[2] == 'started' then
  -- The run's first heartbeat, in the same step as its claim: a worker dying right after
  -- claiming is then noticed as WorkerLost like any other.
  redis.call('HSET', KEYS[1], ARGV[1] .. '|heartbeat', value)
end
return 1
