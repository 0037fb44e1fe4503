-- Remove a due-index hint only if nobody moved it since it was read (compare-and-delete).
-- KEYS[1] due bucket (sorted set)   ARGV[1] member   ARGV[2] score read earlier
-- Returns 1 if removed.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
