-- Prune members of a hint index, each only if its score is still the one the pruner read
-- before it checked the member against the actor's own keys (a member noted again since
-- has a new score and stays).
-- KEYS[1] the sorted set
-- ARGV[1 + 2*(i-1)] member   ARGV[2 + 2*(i-1)] its score as read
-- Returns the number of members removed.
local index = KEYS[1]
local err = check_type(index, 'zset')
if err then return err end
local removed = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', index, ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    removed = removed + redis.call('ZREM', index, ARGV[i])
  end
end
return removed
