-- Move (or drop) one due-index hint, unless someone moved it since the tick read it; a hint
-- moved *earlier* meanwhile (a worker's ZADD LT: more urgent) is kept.
-- KEYS[1] due bucket (sorted set)
-- ARGV[1] member   ARGV[2] score read earlier   ARGV[3] new score, or "" to drop it
-- Returns 1 if the hint was changed, else 0.
local err = check_type(KEYS[1], 'zset')
if err then return err end
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
local old = tonumber(ARGV[2])
if ARGV[3] == '' then
  if current and tonumber(current) == old then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return 1
  end
  return 0
end
local new = tonumber(ARGV[3])
if not current or tonumber(current) == old or tonumber(current) > new then
  redis.call('ZADD', KEYS[1], new, ARGV[1])
  return 1
end
return 0
