"""The one Lua script every Redis write goes through (EVALSHA, EVAL if the server lacks it).

It runs atomically on the server: check the revision, check that each item touched still holds
the value the client validated against, write the hashes, bump the revision, append one stream
entry per change with entry id ``<rev>-<seq>``. Every check comes before the first write: a Lua
error does not roll back what a script already wrote. Only commands Redis, Valkey and Dragonfly
all support; every key is passed in KEYS (Dragonfly and Redis Cluster require it).

The epoch (the id of the store's history, see `Store`) is the candidate passed in when the store
is at revision 0 or holds none, or when a new history is asked for (republish); a script cannot
make a random id itself (its RNG is seeded the same on every run). Each stream entry carries the
epoch, so a reader following the stream sees a reset even between two reads.

KEYS: rev, changes stream, one hash per kind (in `KINDS` order), epoch.
ARGV: expect_rev, maxlen, approximate ("1": ``MAXLEN ~``), actor, at, nchecks, nchanges,
      candidate epoch, new history ("1": always take the candidate), minimum new revision, then
      nchecks x (kind, id, expected: "0" absent or "1" followed by the stored text),
      then nchanges x (kind, id, op, before, after) with "" for no value.
Returns {"ok", new_rev, epoch} | {"conflict", rev} | {"stale", kind, id} | {"ahead", stream_rev}.
"""

from __future__ import annotations

import hashlib

from minirouter.model import KINDS

_HASHES = ", ".join(f"{kind} = KEYS[{3 + i}]" for i, kind in enumerate(KINDS))

APPLY = f"""
local unpack = unpack or table.unpack  -- Lua 5.1 (Redis, Valkey) or 5.4 (Dragonfly)
local HASH = {{{_HASHES}}}
local rev = redis.call('GET', KEYS[1])
if rev then
  rev = tonumber(rev)
  if not rev then return redis.error_reply('ERR minirouter: ' .. KEYS[1] .. ' is not an integer') end
else
  rev = 0
end
if rev ~= tonumber(ARGV[1]) then return {{'conflict', rev}} end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 then
  local last_rev = tonumber(string.match(last[1][1], '^(%d+)%-'))
  if last_rev > rev then return {{'ahead', last_rev}} end
end
local nchecks, nchanges = tonumber(ARGV[6]), tonumber(ARGV[7])
local EPOCH = KEYS[{3 + len(KINDS)}]
local i = 11
for _ = 1, nchecks do
  local hash = HASH[ARGV[i]]
  if not hash then return redis.error_reply('ERR minirouter: unknown kind ' .. ARGV[i]) end
  local current = redis.call('HGET', hash, ARGV[i + 1])
  local expected = ARGV[i + 2]
  if current then
    if expected ~= '1' .. current then return {{'stale', ARGV[i], ARGV[i + 1]}} end
  elseif expected ~= '0' then
    return {{'stale', ARGV[i], ARGV[i + 1]}}
  end
  i = i + 3
end
local epoch = redis.call('GET', EPOCH)
if ARGV[9] == '1' or rev == 0 or not epoch then
  epoch = ARGV[8]
  redis.call('SET', EPOCH, epoch)
end
local new_rev = rev + 1
if tonumber(ARGV[10]) > new_rev then new_rev = tonumber(ARGV[10]) end
redis.call('SET', KEYS[1], new_rev)
for seq = 1, nchanges do
  local kind, id, op, before, after = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if op == 'put' then
    redis.call('HSET', HASH[kind], id, after)
  else
    redis.call('HDEL', HASH[kind], id)
  end
  local xadd = {{'XADD', KEYS[2], 'MAXLEN'}}
  if ARGV[3] == '1' then xadd[#xadd + 1] = '~' end
  local fields = {{ARGV[2], new_rev .. '-' .. seq,
    'rev', new_rev, 'n', nchanges, 'kind', kind, 'id', id, 'op', op,
    'before', before, 'after', after, 'actor', ARGV[4], 'at', ARGV[5], 'epoch', epoch}}
  for _, value in ipairs(fields) do xadd[#xadd + 1] = value end
  redis.call(unpack(xadd))
  i = i + 5
end
return {{'ok', new_rev, epoch}}
"""

APPLY_SHA = hashlib.sha1(APPLY.encode()).hexdigest()
