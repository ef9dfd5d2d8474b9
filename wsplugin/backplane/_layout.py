"""The Redis backplane's layout: its key and topic names, and its Lua scripts.

Keys and topics start with ``<p> = <prefix>:<db>`` (``wsplugin:0`` by
default): Redis pub/sub ignores the database index, so it is part of the
topic names too.

- ``<p>:all``: broadcasts to every connection, and ``disconnect_all``;
- ``<p>:node:<node_id>``: commands for one node's connections;
- ``<p>:ch:<channel>``: one channel's publications;
- ``<p>:meta:<channel>``: a hash ``{e: epoch, o: last offset}``, and the
  channel's own history size ``s`` and TTL ``t`` (ms) once a publisher
  gave them;
- ``<p>:hist:<channel>``: a Stream whose entry ids are ``<offset>-0``;
- ``<p>:counts:<node_id>``: a node's connection and subscriber counts;
- ``<p>:nodes``: a sorted set of live nodes, scored by their expiry time.

Plain values and strings: no reactor, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "COUNT_LUA",
    "HEARTBEAT_LUA",
    "PUBLISH_LUA",
    "RECOVER_LUA",
    "WITHDRAW_LUA",
    "RedisLayout",
]

# KEYS: meta, stream. ARGV: topic, epoch if new, history size ('' = the
# channel's own, else the default), ttl ms (same), message, default size,
# default ttl ms, then the publishing node's mark: the highest epoch and
# offset it has seen of the channel ('' = none). A size or ttl given is kept
# in the meta hash (s, t): the channel's publishers that give none keep it,
# until the history expires. A mark above the top offset of the same epoch
# means Redis lost offsets it had handed out (it came back from an older
# snapshot): the epoch is replaced before the offset is assigned, so no
# offset is handed out twice in one epoch. Returns {offset, epoch}, plus
# 'rolled' when it replaced the epoch.
PUBLISH_LUA = """
local rolled = false
if redis.call('HSETNX', KEYS[1], 'e', ARGV[2]) == 1 then
  redis.call('DEL', KEYS[2])
elseif ARGV[8] ~= '' and redis.call('HGET', KEYS[1], 'e') == ARGV[8]
    and tonumber(redis.call('HGET', KEYS[1], 'o') or '0') < tonumber(ARGV[9]) then
  redis.call('HSET', KEYS[1], 'e', ARGV[2], 'o', 0)
  redis.call('DEL', KEYS[2])
  rolled = true
end
local size = ARGV[3]
if size == '' then
  size = redis.call('HGET', KEYS[1], 's') or ARGV[6]
else
  redis.call('HSET', KEYS[1], 's', size)
end
local ttl = ARGV[4]
if ttl == '' then
  ttl = redis.call('HGET', KEYS[1], 't') or ARGV[7]
else
  redis.call('HSET', KEYS[1], 't', ttl)
end
local off = redis.call('HINCRBY', KEYS[1], 'o', 1)
local ep = redis.call('HGET', KEYS[1], 'e')
size = tonumber(size)
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', size, off .. '-0', 'm', ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PUBLISH', ARGV[1], off .. ' ' .. ep .. '\\n' .. ARGV[5])
if rolled then return {off, ep, 'rolled'} end
return {off, ep}
"""

# KEYS: meta, stream. ARGV: epoch if new, ttl ms, since epoch ('' = none),
# since offset, then the recovering node's mark (as in PUBLISH_LUA; '' =
# none), and '1' for a node's own catch-up: when the epoch changed, it gets
# the new epoch's entries from offset 1 (if all are kept), so the node's
# connected subscribers miss nothing of it; a client reloads instead.
# Returns {epoch, top} or {epoch, top, status[, entries]}, or
# {epoch, 0, 'rolled'} when the node's mark shows that Redis lost offsets it
# had handed out and the script replaced the epoch. ``since`` comes from a
# client and never replaces the epoch: above the top it only answers
# 'epoch', so a client claiming offset 999999 cannot wipe a history.
RECOVER_LUA = """
if redis.call('HSETNX', KEYS[1], 'e', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'o', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'e') == ARGV[5]
    and tonumber(redis.call('HGET', KEYS[1], 'o') or '0') < tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[1], 'e', ARGV[1], 'o', 0)
  redis.call('DEL', KEYS[2])
  return {ARGV[1], 0, 'rolled'}
end
local ep = redis.call('HGET', KEYS[1], 'e')
local top = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
if ARGV[3] == '' then return {ep, top} end
local since = tonumber(ARGV[4])
if ARGV[3] ~= ep and ARGV[7] == '1' and top > 0 then
  local entries = redis.call('XRANGE', KEYS[2], '1-0', top .. '-0')
  if #entries == top then return {ep, top, 'epoch', entries} end
end
if ARGV[3] ~= ep or since > top then return {ep, top, 'epoch'} end
if since == top then return {ep, top, 'ok'} end
local entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', top .. '-0')
if #entries ~= top - since then return {ep, top, 'old'} end
return {ep, top, 'ok', entries}
"""

# KEYS: this node's counts hash, the nodes zset. ARGV: node id, ttl ms,
# then field/value pairs. The zset scores are expiry times in Redis's clock.
HEARTBEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('DEL', KEYS[1])
local i = 3
while i <= #ARGV do
  local j = math.min(i + 399, #ARGV)
  redis.call('HSET', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# KEYS: nodes zset. ARGV: counts key prefix, field, this node (left out: the
# caller adds its own exact count). Forgets nodes whose heartbeat expired.
COUNT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local total = 0
for _, n in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if n ~= ARGV[3] then
    local v = redis.call('HGET', ARGV[1] .. n, ARGV[2])
    if v then total = total + tonumber(v) end
  end
end
return total
"""

# KEYS: this node's counts hash, the nodes zset. ARGV: node id.
WITHDRAW_LUA = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class RedisLayout:
    """The key and topic names of one node, under ``<prefix>:<db>``.

    Args:
        prefix: The URL's key prefix (``wsplugin`` by default).
        db: The URL's database index.
        node_id: This node's id.
    """

    prefix: str
    db: int
    node_id: str

    @property
    def base(self) -> str:
        """``<prefix>:<db>``, the start of every key and topic."""
        return f"{self.prefix}:{self.db}"

    @property
    def topic_all(self) -> str:
        """The topic every node is subscribed to."""
        return f"{self.base}:all"

    @property
    def topic_node(self) -> str:
        """This node's own topic (commands for its connections)."""
        return self.node_topic(self.node_id)

    @property
    def channel_prefix(self) -> bytes:
        """What every channel topic starts with, as the link delivers it."""
        return f"{self.base}:ch:".encode()

    def node_topic(self, node_id: str) -> str:
        """The topic of the node ``node_id``."""
        return f"{self.base}:node:{node_id}"

    def channel_topic(self, channel: str) -> str:
        """The topic a channel's publications go to."""
        return f"{self.base}:ch:{channel}"

    def history_keys(self, channel: str) -> list[str]:
        """The meta hash and history stream of a channel (the KEYS of the
        publish and recover scripts)."""
        return [f"{self.base}:meta:{channel}", f"{self.base}:hist:{channel}"]

    @property
    def counts_prefix(self) -> str:
        """What every node's counts key starts with."""
        return f"{self.base}:counts:"

    @property
    def counts_keys(self) -> list[str]:
        """This node's counts hash and the nodes set (the KEYS of the
        heartbeat and withdraw scripts)."""
        return [self.counts_prefix + self.node_id, self.nodes_key]

    @property
    def nodes_key(self) -> str:
        """The sorted set of live nodes."""
        return f"{self.base}:nodes"
