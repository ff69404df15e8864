-- Read a channel's position (and, optionally, history) atomically. A channel
-- without meta gets its epoch here, as publish.lua would give it: the epoch
-- exists from the first subscription, so a client greeted with offset 0 on
-- an empty channel can recover what the first publishes add to that epoch.
-- Scripts run one at a time, so a publish racing this read finds the epoch
-- created here, or this read finds the one the publish created: one epoch.
--
-- KEYS[1]  meta hash of the channel: offset, epoch, born (as publish.lua)
-- KEYS[2]  history stream of the channel (entry id = "<offset>-1")
-- KEYS[3]  start stream of the channel (the epoch's first publications, while it
--          is new: publish.lua)
-- ARGV[1]  meta TTL, seconds (given to meta created here, as publish.lua does)
-- ARGV[2]  how many history entries to read (0: none)
-- ARGV[3]  optional: read the oldest entries from this stream id on
--          ("<since + 1>-0"); absent: the newest, newest first
-- ARGV[4]  optional, with ARGV[3]: the epoch that stream id belongs to; when the
--          channel's epoch is another one, read the oldest entries of the channel's
--          epoch instead (from its start: "0-0"), in this same atomic step
-- ARGV[5]  optional, with ARGV[4]: "start" reads the start stream instead of history
--
-- Returns {offset, epoch, entries}, entries as XRANGE / XREVRANGE give them.
-- Meta that exists is only read: reading does not extend a channel's life.

local meta = redis.call('HMGET', KEYS[1], 'offset', 'epoch')
local offset = tonumber(meta[1]) or 0
local epoch = meta[2]
if not epoch then
  -- No meta: the channel is new or its history was lost. A fresh epoch
  -- tells clients that what they hold cannot be continued; history left
  -- from an older epoch is dropped, as publish.lua drops it.
  local now = redis.call('TIME')
  epoch = string.format('%x%x', tonumber(now[1]), tonumber(now[2]))
  offset = 0
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0, 'born',
    string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000)))
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end

local entries = {}
local count = tonumber(ARGV[2])
if count > 0 then
  if ARGV[3] then
    local start = ARGV[3]
    if ARGV[4] and ARGV[4] ~= epoch then
      start = '-'
    end
    local stream = KEYS[2]
    if ARGV[5] == 'start' then
      stream = KEYS[3]
    end
    entries = redis.call('XRANGE', stream, start, '+', 'COUNT', count)
  else
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', count)
  end
end
return {offset, epoch, entries}
