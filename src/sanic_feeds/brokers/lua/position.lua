-- Read a channel's position (and, optionally, history) atomically. A channel
-- without meta gets its epoch here, as publish.lua would give it: the epoch
-- exists from the first subscription, so a client greeted with offset 0 on
-- an empty channel can recover what the first publishes add to that epoch.
-- Scripts run one at a time, so a publish racing this read finds the epoch
-- created here, or this read finds the one the publish created: one epoch.
--
-- History is the last ARGV[2] publications. The stream may hold more: a new
-- epoch's start, which publish.lua does not trim while the epoch is new, and
-- which only reads with ARGV[6] see.
--
-- KEYS[1]  meta hash of the channel: offset, epoch, born (as publish.lua)
-- KEYS[2]  history stream of the channel (entry id = "<offset>-1")
-- ARGV[1]  meta TTL, seconds (given to meta created here, as publish.lua does)
-- ARGV[2]  history size
-- ARGV[3]  how many entries to read (0: none)
-- ARGV[4]  optional: read the oldest entries from this stream id on
--          ("<since + 1>-0"); absent: the newest, newest first
-- ARGV[5]  optional, with ARGV[4]: the epoch that stream id belongs to; when the
--          channel's epoch is another one, read the oldest entries of the channel's
--          epoch instead (from its start), in this same atomic step
-- ARGV[6]  optional, with ARGV[5]: read the epoch's start that history no longer
--          holds instead, if the epoch is younger than this, milliseconds (else none)
--
-- Returns {offset, epoch, entries}, entries as XRANGE / XREVRANGE give them.
-- Meta that exists is only read: reading does not extend a channel's life.

local meta = redis.call('HMGET', KEYS[1], 'offset', 'epoch', 'born')
local offset = tonumber(meta[1]) or 0
local epoch = meta[2]
local born = tonumber(meta[3])
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
if not epoch then
  -- No meta: the channel is new or its history was lost. A fresh epoch
  -- tells clients that what they hold cannot be continued; history left
  -- from an older epoch is dropped, as publish.lua drops it.
  epoch = string.format('%x%x', tonumber(now[1]), tonumber(now[2]))
  offset = 0
  born = now_ms
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0, 'born', string.format('%d', born))
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end

-- The oldest offset of history.
local oldest = math.max(offset - tonumber(ARGV[2]) + 1, 1)
local entries = {}
local count = tonumber(ARGV[3])
if count > 0 then
  if ARGV[6] then
    if ARGV[5] == epoch and oldest > 1 and born and now_ms - born < tonumber(ARGV[6]) then
      entries = redis.call('XRANGE', KEYS[2], ARGV[4], '(' .. oldest .. '-0', 'COUNT', count)
    end
  elseif ARGV[4] then
    local start = ARGV[4]
    if ARGV[5] and ARGV[5] ~= epoch then
      start = '-'
    end
    local from = oldest .. '-0'
    if start ~= '-' and tonumber(string.match(start, '^%d+')) > oldest then
      from = start
    end
    entries = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', count)
  else
    entries = redis.call('XREVRANGE', KEYS[2], '+', oldest .. '-0', 'COUNT', count)
  end
end
return {offset, epoch, entries}
