-- Applies one flush's increments to one group of rankings, atomically.
-- Mirrors crate::scoring::plan_landmark and store::memory::MemoryStore::apply.
--
-- KEYS[1]            the group's meta hash (landmarks, fences)
-- KEYS[2 .. n+1]     one ranking zset per profile
-- KEYS[n+2 .. n+1+k] all-time count zsets, one per event type (only with counts)
-- ARGV: reference_ms, max_members, floor, rebase_after_half_lives, n, f,
--       then n × (profile name, half-life ms, landmark the increments are
--       relative to),
--       then f × (fence field, expected offset or '', new offset),
--       then member count m and m × (member, n increments relative to
--       their profile's landmark),
--       then count rows c and c × (article, then one count per event type),
--       then the group's time to live in ms (0: none): every key of the
--       group expires after that long without a write (DESIGN §12).
-- The writer computes each increment against the landmark it expects
-- this write to leave (the stored one, or reference_ms when there is
-- none or the write rebases), so that they are added as sent: Lua neither
-- parses nor formats a score.
-- Returns m; {'conflict', field, stored value} when a fence differs from
-- what the writer expected; {'landmark', stored landmark or '' per
-- profile} when a landmark differs from what the writer expected: then
-- nothing is written.
local r = tonumber(ARGV[1])
local max_members = tonumber(ARGV[2])
local floor = tonumber(ARGV[3])
local rebase_after = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local f = tonumber(ARGV[6])

local i = 7 + 3 * n
for _ = 1, f do
  local stored = redis.call('HGET', KEYS[1], ARGV[i]) or ''
  if stored ~= ARGV[i + 1] then
    return {'conflict', ARGV[i], stored}
  end
  i = i + 3
end

-- Each profile's landmark after this write: the stored one, or r when
-- there is none or it is rebase_after half-lives old.
local stored = {}
local rebase = {}
local mismatch = false
for p = 1, n do
  local h = tonumber(ARGV[5 + 3 * p])
  local l = redis.call('HGET', KEYS[1], 'landmark:' .. ARGV[4 + 3 * p])
  stored[p] = l or ''
  local after = r
  if l then
    l = tonumber(l)
    if (r - l) < rebase_after * h then
      after = l
    else
      rebase[p] = l
    end
  end
  if after ~= tonumber(ARGV[6 + 3 * p]) then
    mismatch = true
  end
end
if mismatch then
  local reply = {'landmark'}
  for p = 1, n do
    reply[p + 1] = stored[p]
  end
  return reply
end

i = 7 + 3 * n
for _ = 1, f do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
  i = i + 3
end

local function trim(key)
  local card = redis.call('ZCARD', key)
  if card > max_members then
    redis.call('ZREMRANGEBYRANK', key, 0, card - max_members - 1)
  end
end

for p = 1, n do
  if stored[p] == '' or rebase[p] then
    local key = KEYS[1 + p]
    if rebase[p] then
      local h = tonumber(ARGV[5 + 3 * p])
      redis.call('ZUNIONSTORE', key, 1, key, 'WEIGHTS', 2 ^ ((rebase[p] - r) / h))
      redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. floor)
    end
    redis.call('HSET', KEYS[1], 'landmark:' .. ARGV[4 + 3 * p], ARGV[1])
  end
end

local m = tonumber(ARGV[i])
i = i + 1
for _ = 1, m do
  local member = ARGV[i]
  for p = 1, n do
    redis.call('ZINCRBY', KEYS[1 + p], ARGV[i + p], member)
  end
  i = i + n + 1
end
for p = 1, n do
  trim(KEYS[1 + p])
end

local c = tonumber(ARGV[i])
i = i + 1
-- The event types are the count keys after the rankings.
local kinds = #KEYS - 1 - n
for _ = 1, c do
  local article = ARGV[i]
  for k = 1, kinds do
    local v = tonumber(ARGV[i + k])
    if v > 0 then
      redis.call('ZINCRBY', KEYS[n + 1 + k], v, article)
    end
  end
  i = i + 1 + kinds
end
if c > 0 then
  for k = 1, kinds do
    trim(KEYS[n + 1 + k])
  end
end
local ttl = tonumber(ARGV[i])
if ttl and ttl > 0 then
  for k = 1, #KEYS do
    redis.call('PEXPIRE', KEYS[k], ttl)
  end
end
return m
