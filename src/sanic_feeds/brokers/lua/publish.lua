-- Append one publication to a channel's history and publish it, atomically,
-- so that every instance sees the same offset and pub/sub order equals
-- offset order.
--
-- KEYS[1]  meta hash of the channel: offset, epoch, born (when the epoch
--          began, milliseconds since 1970)
-- KEYS[2]  history stream of the channel (entry id = "<offset>-1"): the last
--          ARGV[3] publications, and a new epoch's start (see below)
-- KEYS[3]  optional: the idempotency key's record ("<offset>:<epoch>")
-- ARGV[1]  pub/sub channel
-- ARGV[2]  envelope (JSON bytes, without offset and epoch)
-- ARGV[3]  history size (0: keep none, and no start either)
-- ARGV[4]  history TTL, seconds
-- ARGV[5]  meta TTL, seconds
-- ARGV[6]  the stream keeps an epoch's start up to this offset...
-- ARGV[7]  ... while the epoch is younger than this, milliseconds
-- ARGV[8]  with KEYS[3]: how long the idempotency key is remembered, seconds
--
-- Returns {offset, epoch}. Publishes "m<offset>:<epoch>:<envelope>", unless
-- KEYS[3] records an earlier publish with the same idempotency key: then it
-- returns that publish's {offset, epoch} and publishes nothing.

local function now_ms(time)
  return time[1] * 1000 + math.floor(time[2] / 1000)
end

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
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0, 'born', string.format('%d', now_ms(now)))
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('EXPIRE', KEYS[1], ARGV[5])

local size = tonumber(ARGV[3])
if size > 0 then
  -- When Redis lost a channel, the publishers' backlog lands the moment it is
  -- back, past what history keeps, and the clients of the lost epoch come back
  -- a moment later: they are given the new epoch whole. So while the epoch is
  -- new, its start stays in the stream past the history size (reads of history
  -- see the last ARGV[3] only, position.lua); the first publish after that
  -- trims it.
  local trim = true
  if offset > size and offset <= tonumber(ARGV[6]) then
    local born = tonumber(redis.call('HGET', KEYS[1], 'born'))
    trim = not born or now_ms(redis.call('TIME')) - born >= tonumber(ARGV[7])
  end
  if trim then
    redis.call('XADD', KEYS[2], 'MAXLEN', size, offset .. '-1', 'e', ARGV[2])
  else
    redis.call('XADD', KEYS[2], offset .. '-1', 'e', ARGV[2])
  end
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end

if KEYS[3] then
  redis.call('SET', KEYS[3], offset .. ':' .. epoch, 'EX', ARGV[8])
end

redis.call('PUBLISH', ARGV[1], 'm' .. offset .. ':' .. epoch .. ':' .. ARGV[2])
return {offset, epoch}
