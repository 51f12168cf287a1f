-- The store the specs run against: SQLite in DATA/triage.db (the default), or PostgreSQL when the
-- environment says TRIAGE_TEST_BACKEND=postgres (spec/tests.cmake registers the store specs a second
-- time that way, as lua_pg_*). On PostgreSQL every data directory has a database of its own on
-- PG.shared(), named from the directory's path: a server restarted on the same --data finds the same
-- database, a new data directory gets an empty one.
--
--   local B = require "support.backend"
--   B.name, B.postgres             -- "sqlite" | "postgres", and whether it is PostgreSQL
--   B.store_url(data_dir)          -- the --store URL for a server on data_dir (nil on SQLite)
--   B.database(data_dir)           -- PostgreSQL: the database's name, created on first use
--   B.copy_database(from, to)      -- PostgreSQL: to's database as a copy of from's (pg_dump)
--   B.store_args(data_dir)         -- { "--store", url } or {}
--   B.store_words(data_dir)        -- "--data DIR [--store URL]", quoted, for `triage audit ...`
--   B.in_process()                 -- TRIAGE_TEST_STORE for the in-process library (triage.testing)
--   B.in_process_url(schema)       -- that store's URL for the CLI, with an app's schema
-- A spec that is SQLite by nature says so where it stops on PostgreSQL:
--   if B.postgres then return pending("SQLite only: <why>") end
local sys = require "support.sys"
local bit = require "bit"

local M = {}

M.name = os.getenv("TRIAGE_TEST_BACKEND")
if M.name == nil or M.name == "" then M.name = "sqlite" end
if M.name ~= "sqlite" and M.name ~= "postgres" then
  error("TRIAGE_TEST_BACKEND must be sqlite or postgres, not " .. M.name, 0)
end
M.postgres = M.name == "postgres"

-- The PostgreSQL server of this busted process (raises naming why it could not start).
function M.pg()
  assert(M.postgres, "not running on PostgreSQL (TRIAGE_TEST_BACKEND=postgres)")
  return require("support.postgres").shared()
end

-- data_dir as an absolute path without following links (the directory may not exist yet), so that
-- every spelling of it given to a server and to the helpers below names the same database.
function M.absolute(data_dir)
  local path = data_dir
  if path:sub(1, 1) ~= "/" then path = (sys.realpath(".") or ".") .. "/" .. path end
  path = path:gsub("/%./", "/"):gsub("/+", "/"):gsub("/%.?$", "")
  return path
end

-- FNV-1a over the bytes of s, 32 bits, from basis (the prime 16777619 is 2^24 + 403: exact in doubles).
local function fnv1a(s, basis)
  local h = basis
  for i = 1, #s do
    h = bit.bxor(h, s:byte(i))
    h = bit.tobit(bit.lshift(h, 24) + h * 403)
  end
  return bit.tohex(h)
end

-- The database of a data directory: "d_" and 16 hex digits of its absolute path.
function M.database_name(data_dir)
  local path = M.absolute(data_dir)
  local basis = bit.tobit(2166136261)
  return "d_" .. fnv1a(path, basis) .. fnv1a(path:reverse(), basis)
end

-- The databases this process made on the shared server: kept in the registry, like the server,
-- since busted reloads this module for every spec file.
local REGISTRY_KEY = "triage.spec.backend.databases"
local function created()
  local reg = debug.getregistry()
  reg[REGISTRY_KEY] = reg[REGISTRY_KEY] or {}
  return reg[REGISTRY_KEY]
end

function M.database(data_dir)
  local name = M.database_name(data_dir)
  local made = created()
  if not made[name] then
    M.pg():ensure_database(name)
    made[name] = true
  end
  return name
end

-- PostgreSQL: the database of data directory to_dir becomes a copy of from_dir's (pg_dump).
function M.copy_database(from_dir, to_dir)
  local name = M.database_name(to_dir)
  M.pg():copy_database(M.database(from_dir), name)
  local made = created()
  made[name] = true
  return name
end

function M.store_url(data_dir)
  if not M.postgres then return nil end
  return M.pg():url(M.database(data_dir))
end

function M.store_args(data_dir)
  local url = M.store_url(data_dir)
  return url and { "--store", url } or {}
end

-- The command-line words that point a `triage audit ...` (or another subcommand taking --data) at the
-- store of data_dir: "--data DIR", and on PostgreSQL "--store URL" too; quoted for the shell.
function M.store_words(data_dir)
  local words = "--data " .. sys.quote(data_dir)
  local url = M.store_url(data_dir)
  if url then words = words .. " --store " .. sys.quote(url) end
  return words
end

-- The database of the in-process library: triage.testing's stores on PostgreSQL each take a schema
-- of their own in it (one per data directory).
M.IN_PROCESS_DATABASE = "in_process"

-- On PostgreSQL: start the shared server and point TRIAGE_TEST_STORE at the in-process database (the
-- library reads it when an app opens its store). Nothing on SQLite. Returns the URL or nil.
function M.in_process()
  if not M.postgres then return nil end
  local pg = M.pg()
  local made = created()
  if not made[M.IN_PROCESS_DATABASE] then
    pg:create_database(M.IN_PROCESS_DATABASE)
    made[M.IN_PROCESS_DATABASE] = true
  end
  local url = pg:url(M.IN_PROCESS_DATABASE)
  sys.setenv("TRIAGE_TEST_STORE", url)
  return url
end

-- The URL of an in-process app's store for a `triage` subcommand: TRIAGE_TEST_STORE with the app's
-- schema (`SELECT current_schema()` through its db) as the connection's search_path.
function M.in_process_url(schema)
  local url = assert(os.getenv("TRIAGE_TEST_STORE"), "TRIAGE_TEST_STORE is not set (B.in_process)")
  return url .. (url:find("?", 1, true) and "&" or "?") .. "options=-csearch_path%3D" .. schema
end

return M
