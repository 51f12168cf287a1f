-- HS256 tokens made by the specs themselves (libcrypto's HMAC through the FFI), to send the server
-- what `triage token` would never make: expired, not yet valid, another alg, a wrong key.
--
--   local jwt = require "support.jwt"
--   jwt.sign({ alg = "HS256", kid = "current" }, { sub = "P-1", exp = os.time() + 60 }, secret)
--   jwt.keys(path)   -- { kid = secret } of a --token-keys file, and the kids in order
local ffi = require "ffi"
local cjson = require "cjson"

ffi.cdef [[
  typedef struct evp_md_st EVP_MD;
  const EVP_MD *EVP_sha256(void);
  unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len, const unsigned char *d, size_t n,
                      unsigned char *md, unsigned int *md_len);
]]
local crypto = ffi.load("crypto")

local M = {}

local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

function M.b64url(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = a * 65536 + (b or 0) * 256 + (c or 0)
    local n = c and 4 or b and 3 or 2
    for k = 1, n do
      local idx = math.floor(v / 2 ^ (18 - 6 * (k - 1))) % 64
      out[#out + 1] = ALPHABET:sub(idx + 1, idx + 1)
    end
  end
  return table.concat(out)
end

function M.hmac(secret, data)
  local md = ffi.new("unsigned char[32]")
  local len = ffi.new("unsigned int[1]", 32)
  crypto.HMAC(crypto.EVP_sha256(), secret, #secret, data, #data, md, len)
  return ffi.string(md, 32)
end

-- header and payload: tables (encoded here) or strings (sent as they are).
function M.sign(header, payload, secret)
  local h = type(header) == "table" and cjson.encode(header) or header
  local p = type(payload) == "table" and cjson.encode(payload) or payload
  local signed = M.b64url(h) .. "." .. M.b64url(p)
  return signed .. "." .. M.b64url(M.hmac(secret, signed))
end

function M.keys(path)
  local keys, order = {}, {}
  for line in io.lines(path) do
    local kid, secret = line:match("^(%S+)%s+(.-)%s*$")
    if kid and kid:sub(1, 1) ~= "#" then
      keys[kid] = secret
      order[#order + 1] = kid
    end
  end
  return keys, order
end

-- The payload of a token, decoded.
function M.payload(token)
  local p = token:match("^[^.]+%.([^.]+)%.")
  local pad = p .. ("="):rep((4 - #p % 4) % 4)
  local b64 = pad:gsub("-", "+"):gsub("_", "/")
  local STD = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local out = {}
  local acc, nbits = 0, 0
  for ch in b64:gmatch("[^=]") do
    acc = acc * 64 + (STD:find(ch, 1, true) - 1)
    nbits = nbits + 6
    if nbits >= 8 then
      nbits = nbits - 8
      local byte = math.floor(acc / 2 ^ nbits)
      out[#out + 1] = string.char(byte)
      acc = acc % 2 ^ nbits
    end
  end
  return cjson.decode(table.concat(out))
end

return M
