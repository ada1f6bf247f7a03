"""The Lua scripts the shared cache runs on Redis: one round trip per read, one per bump.

Kept apart from service.caching.cache so the mechanism reads as Python; the rules they keep are in
that module's doc (generations never go backwards; with read replicas, a fill never comes from
data older than the generation it is stored under).
"""

# Generations on Redis come from Redis's clock in microseconds (one clock for
# every worker and replica). A missing generation starts at the clock; a bump
# moves it to the clock, or one up if it is ahead. Scripts run one at a time
# and each takes longer than a microsecond, so a value is not ahead of the
# clock once written, and a generation that is lost and started again lands
# above every value it held (the rule in the module doc). The numbers stay
# below 2^53, exact in Lua.

# Every generation in KEYS moves to Redis's clock, or one up if it is ahead.
BUMP_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local value = now
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current >= value then value = current + 1 end
  redis.call('SET', KEYS[i], string.format('%d', value), 'EX', ARGV[1])
end
return #KEYS
"""


# With read replicas (DATABASE_REPLICA_URLS) each generation `g:<name>` has a floor `f:<name>`:
# the highest WAL position (LSN) of a commit that bumped it. A miss may fill from a replica
# only once it replayed the highest floor of the entry's generations (service/storage/replicas.py);
# else the old row could be stored under the new generation. READ_SCRIPT returns that floor.

# BUMP_SCRIPT with floors: KEYS are the generations, then their floors; each floor moves up to
# ARGV[2] before its generation moves, in one script, so no reader sees the new generation with
# the old floor.
BUMP_FLOOR_SCRIPT = """
local n = #KEYS / 2
local lsn = tonumber(ARGV[2])
for i = n + 1, 2 * n do
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if lsn > current then current = lsn end
  redis.call('SET', KEYS[i], string.format('%d', current), 'EX', ARGV[1])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, n do
  local value = now
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current >= value then value = current + 1 end
  redis.call('SET', KEYS[i], string.format('%d', value), 'EX', ARGV[1])
end
return n
"""

# A miss across workers and replicas (`SharedCache._load_once`): KEYS[1] is the
# versioned entry, KEYS[2] its fill lock. Returns {1, value} when the entry is
# there, {2, time} when this caller took the lock (ARGV[1] its token, ARGV[2] its
# life in ms), {0, time} while another holds it; time is Redis's clock in microseconds (a load that
# starts after it sees every write whose bump came before it: STAMP_SCRIPT).
CLAIM_SCRIPT = """
local value = redis.call('GET', KEYS[1])
if value then return {1, value} end
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2, now} end
return {0, now}
"""

# Store the entry (ARGV[2], TTL ARGV[3]) when ARGV[2] is given, and its gzip variant (ARGV[4]) under
# KEYS[3] when given (service.caching.encoding), and free the fill lock if it is still this caller's
# (token ARGV[1]): one round trip.
FILL_SCRIPT = """
if ARGV[2] then redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
if ARGV[4] then redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[3]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""

# Every read, in one round trip (service.caching.cache `_find`): resolve the generations, start the
# missing ones, build the versioned key and GET it server-side, with what the entry needs besides.
# Redis runs scripts atomically; the script touches keys it computes, which is fine on a single
# Redis (not on Redis Cluster: docs/capacity.md). KEYS: the entry's generations
# (epoch first), then their floors when ARGV[4] is '1', then the viewer's generation of each fact.
# ARGV: the entry's base (prefixed), the generations' TTL, the number of the entry's generations,
# '1' with floors, the cache's key prefix, the viewer's set prefix ('vs:<viewer>:'), '1' when an
# anonymous client accepts gzip, then the name of each fact.
#
# The stored value is '=' then the entry: lines a domain keeps in front (never starting with '{'),
# the header (service.caching.personalize) and the body. Returns {key, floor, value or false,
# counts, one reply per fact}; with ARGV[7] '1' and nothing to change in the body (no fact, no count
# that moved on), the value is the entry's gzip variant when there is one, and the reply ends with 1.
# - counts: false when the header names none; else, for each count whose generation moved on
#   since the entry recorded it, its index (from 1), its small entry's key and that entry or false.
# - per fact: false when the entry names no object for it; the viewer's set key when that set is
#   missing (the caller builds it); else one 0/1 per id of the header, then 1 if the set was too
#   large to keep. The set of fact j is `vs:<viewer>:<name>:<epoch>.<viewer's generation>` and always
#   holds '0' (a set cannot be empty); '-1' marks one too large to keep.
READ_SCRIPT = """
local n = tonumber(ARGV[3])
local prefix = ARGV[5]
local now = nil
local function clock()
  if not now then
    local t = redis.call('TIME')
    now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  end
  return now
end
local function gens_of(keys)
  local vals = redis.call('MGET', unpack(keys))
  for i = 1, #keys do
    if not vals[i] then
      vals[i] = clock()
      redis.call('SET', keys[i], vals[i], 'EX', ARGV[2])
    end
  end
  return vals
end
local gens = gens_of({unpack(KEYS, 1, n)})
local floor = 0
local first = n + 1
if ARGV[4] == '1' then
  local floors = redis.call('MGET', unpack(KEYS, n + 1, 2 * n))
  for i = 1, n do
    local f = tonumber(floors[i] or '0')
    if f > floor then floor = f end
  end
  first = 2 * n + 1
end
local key = ARGV[1] .. ':' .. table.concat(gens, '.')
local value = redis.call('GET', key)
local reply = {key, string.format('%d', floor), value, false}
local m = #KEYS - first + 1
local function gzipped()
  if ARGV[7] ~= '1' or m > 0 then return reply end
  local z = redis.call('GET', key .. ':gz')
  if z then
    reply[3] = z
    reply[5] = 1
  end
  return reply
end
if not value then return reply end
if m == 0 and not string.find(value, '"#":[', 1, true) then return gzipped() end
local at = 2  -- after the serializer's '=' (service.caching.cache.BytesSerializer)
if string.sub(value, 2, 2) ~= '{' then at = string.find(value, '\\n{', 2, true) + 1 end
local line = string.sub(value, at, string.find(value, '\\n', at, true) - 1)
local with_counts = string.find(line, '"#":[', 1, true)
if m == 0 and not with_counts then return gzipped() end
local header
if m == 0 then
  -- An anonymous read needs only the counts ('#': an array of arrays of names and numbers, none with a
  -- ']' inside, so the first ']]' after it closes it); the flags' ids are not decoded.
  local open = with_counts + 4
  header = {['#'] = cjson.decode(string.sub(line, open, string.find(line, ']]', open, true) + 1))}
else
  header = cjson.decode(line)
end
local epoch = gens[1]
if with_counts and #header['#'] > 0 then
  local marks = header['#']
  local keys = {}
  for i = 1, #marks do keys[i] = prefix .. 'g:' .. marks[i][1] end
  local current = gens_of(keys)
  local moved = {}
  for i = 1, #marks do
    if current[i] ~= marks[i][4] then
      local small = prefix .. 'n:' .. marks[i][1] .. ':' .. epoch .. '.' .. current[i]
      moved[#moved + 1] = i
      moved[#moved + 1] = small
      moved[#moved + 1] = redis.call('GET', small)
    end
  end
  reply[4] = moved
end
if m == 0 then
  if reply[4] and #reply[4] > 0 then return reply end
  return gzipped()
end
local viewer = gens_of({unpack(KEYS, first, #KEYS)})
for j = 1, m do
  local marks = header[ARGV[7 + j]]
  if marks and #marks > 0 then
    local set = prefix .. ARGV[6] .. ARGV[7 + j] .. ':' .. epoch .. '.' .. viewer[j]
    if redis.call('EXISTS', set) == 0 then
      reply[4 + j] = set
    else
      local ids = {}
      for i = 1, #marks do ids[i] = marks[i][1] end
      ids[#ids + 1] = '-1'
      reply[4 + j] = redis.call('SMISMEMBER', set, unpack(ids))
    end
  else
    reply[4 + j] = false
  end
end
return reply
"""

# Record, when an entry with counts is stored, the generation each of its numbers was read under
# (service.caching.cache `_stamp`). KEYS: the counts' generations, then their floors when ARGV[4]
# is '1'. ARGV: the Redis time before the entry's load began (ARGV[1]), the generations' TTL, the
# entry's LSN floor, '1' with floors. A missing generation starts now. A generation moved after the
# load began (or, with floors, by a commit past the entry's floor) may or may not be in the number
# read, so it is recorded as '0', which no generation equals: reads then take the number from its
# small entry. A missing generation had no bump since its last expiry (a bump during the load would
# have set it), so it starts now and is recorded; the one case this misses is a generation bumped
# during the load and evicted (maxmemory) before this script, within those milliseconds.
STAMP_SCRIPT = """
local n = #KEYS
if ARGV[4] == '1' then n = n / 2 end
local vals = redis.call('MGET', unpack(KEYS, 1, n))
local floors = {}
if ARGV[4] == '1' then floors = redis.call('MGET', unpack(KEYS, n + 1, 2 * n)) end
local now = nil
local started = tonumber(ARGV[1])
local floor = tonumber(ARGV[3])
for i = 1, n do
  if not vals[i] then
    if not now then
      local t = redis.call('TIME')
      now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
    end
    vals[i] = now
    redis.call('SET', KEYS[i], now, 'EX', ARGV[2])
  elseif tonumber(vals[i]) >= started or tonumber(floors[i] or '0') > floor then
    vals[i] = '0'
  end
end
return vals
"""

# Build a viewer's set (KEYS[1]) once: '0', then ARGV[2..] (the ids, or '-1' for a set too large to
# keep), TTL ARGV[1]. A set another caller built meanwhile under the same key holds the same ids.
FILL_SET_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #ARGV, 1000 do
  redis.call('SADD', KEYS[1], '0', unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if #ARGV < 2 then redis.call('SADD', KEYS[1], '0') end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""
