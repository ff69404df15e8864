-- Append one publication to a channel's history and publish it, atomically,
-- so that every instance sees the same offset and pub/sub order equals
-- offset order.
--
-- KEYS[1]  meta hash of the channel: offset, epoch
-- KEYS[2]  history stream of the channel (entry id = "<offset>-1")
-- KEYS[3]  optional: the idempotency key's record ("<offset>:<epoch>")
-- ARGV[1]  pub/sub channel
-- ARGV[2]  envelope (JSON bytes, without offset and epoch)
-- ARGV[3]  history size (0: keep none)
-- ARGV[4]  history TTL, seconds
-- ARGV[5]  meta TTL, seconds
-- ARGV[6]  with KEYS[3]: how long the idempotency key is remembered, seconds
--
-- Returns {offset, epoch}. Publishes "m<offset>:<epoch>:<envelope>", unless
-- KEYS[3] records an earlier publish with the same idempotency key: then it
-- returns that publish's {offset, epoch} and publishes nothing.

if KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local colon = string.find(seen, ':', 1, true)
    return {tonumber(string.sub(seen, 1, colon - 1)), string.sub(seen, colon + 1)}
  end
end

local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  -- No meta: the channel is new or its history was lost. A fresh epoch
  -- tells clients that what they hold cannot be continued.
  local now = redis.call('TIME')
  epoch = string.format('%x%x', tonumber(now[1]), tonumber(now[2]))
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('EXPIRE', KEYS[1], ARGV[5])

local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', size, offset .. '-1', 'e', ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end

if KEYS[3] then
  redis.call('SET', KEYS[3], offset .. ':' .. epoch, 'EX', ARGV[6])
end

redis.call('PUBLISH', ARGV[1], 'm' .. offset .. ':' .. epoch .. ':' .. ARGV[2])
return {offset, epoch}
