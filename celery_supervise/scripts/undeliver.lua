-- Set aside one outbox entry that can never be delivered, with why: once, even with two
-- relayers at it (the entry moves only if it is still in the outbox).
-- KEYS[1] outbox list   KEYS[2] undeliverable effects list
-- ARGV[1] the outbox entry, exactly as read   ARGV[2] the record: a JSON object, not empty,
-- to which the script adds "at" (Redis ms)
-- Returns 1 if it moved the entry, 0 if the entry was no longer in the outbox.
local outbox, undelivered = KEYS[1], KEYS[2]
for _, k in ipairs({outbox, undelivered}) do
  local kind = redis.call('TYPE', k)['ok']
  if kind ~= 'list' and kind ~= 'none' then return corrupt(k .. ' is a ' .. kind .. ', not a list') end
end
if string.sub(ARGV[2], 1, 1) ~= '{' or string.sub(ARGV[2], 2, 2) == '}' then
  return corrupt('undeliverable effect record is not a JSON object')
end
if redis.call('LREM', outbox, 1, ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', undelivered, '{"at":' .. now_ms() .. ',' .. string.sub(ARGV[2], 2))
return 1
