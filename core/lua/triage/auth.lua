-- Bearer tokens and permissions, as middleware for route files (README.md, "Authentication and
-- permissions"):
--
--   group("/api/v1/trials/:trialId", {
--     "triage.auth.require{ roles = { 'investigator', 'monitor' }, trial_param = 'trialId' }",
--   }, function() ... end)
--
-- The token (Authorization: Bearer <JWT>, HS256) is verified in C against the keys the master read
-- from --token-keys (core/jwt.h); the keys never reach Lua. Its claims: sub (who), role (patient,
-- investigator, monitor, admin), trial or trials (the trials it is for), exp and nbf.
-- 401 when there is no valid token (WWW-Authenticate: Bearer, and a JSON body naming why), 403 when
-- the principal may not do this. Both are decided from the token and the request alone, before the
-- handler reads anything, so neither says whether the record asked for exists.
local ffi = require "ffi"
local cjson_safe = require "cjson.safe"
local C = require("triage.ffi").C
local ctx_module = require "triage.ctx"

local ffi_string = ffi.string
local type, error, pairs, ipairs = type, error, pairs, ipairs

local M = {}

M.ROLES = { patient = true, investigator = true, monitor = true, admin = true }

local PAYLOAD_SIZE = 4097
local payload_buf = ffi.new("char[?]", PAYLOAD_SIZE)
local len_out = ffi.new("size_t[1]")
local errmsg = ffi.new("const char *[1]")

-- TR_AUTH_* -> the reason a 401 names.
local REASONS = {
  [tonumber(C.TR_AUTH_MALFORMED)] = "malformed",
  [tonumber(C.TR_AUTH_BAD_ALG)] = "unsupported alg",
  [tonumber(C.TR_AUTH_BAD_SIGNATURE)] = "bad signature",
  [tonumber(C.TR_AUTH_EXPIRED)] = "expired",
  [tonumber(C.TR_AUTH_NOT_YET_VALID)] = "not yet valid",
}
local NO_KEYS = tonumber(C.TR_AUTH_NO_KEYS)

local function unauthorized(ctx, reason, message)
  local challenge = reason == "missing" and 'Bearer realm="triage"'
    or ('Bearer realm="triage", error="invalid_token", error_description="%s"'):format(reason)
  return ctx:status(401):set_header("WWW-Authenticate", challenge):json {
    error = "unauthorized", reason = reason, message = message,
  }
end

local function forbidden(ctx)
  return ctx:status(403):json { error = "forbidden", message = "this token does not permit this request" }
end

-- The principal of the verified claims (a JSON object), or nil and what is wrong with them.
local function principal_of(payload)
  local claims = cjson_safe.decode(payload)
  if type(claims) ~= "table" then
    return nil, "the token's payload is not a JSON object"
  end
  local sub, role = claims.sub, claims.role
  if type(sub) ~= "string" or sub == "" then
    return nil, "the token has no sub claim"
  end
  if type(role) ~= "string" or not M.ROLES[role] then
    return nil, "the token's role is not patient, investigator, monitor or admin"
  end
  local trials = {}
  if claims.trial ~= nil then
    if type(claims.trial) ~= "string" then
      return nil, "the token's trial claim is not a string"
    end
    trials[1] = claims.trial
  end
  if claims.trials ~= nil then
    if type(claims.trials) ~= "table" then
      return nil, "the token's trials claim is not an array of strings"
    end
    for _, t in ipairs(claims.trials) do
      if type(t) ~= "string" then
        return nil, "the token's trials claim is not an array of strings"
      end
      trials[#trials + 1] = t
    end
  end
  local in_trial = {}
  for _, t in ipairs(trials) do
    in_trial[t] = true
  end
  return { sub = sub, role = role, trial = trials[1], trials = trials, in_trial = in_trial }
end

-- Verify the request's bearer token: its principal, or nil after answering 401 (or 500 when the
-- server has no keys).
local function authenticate(ctx)
  local header = ctx:header("authorization")
  if header == nil then
    return nil, unauthorized(ctx, "missing", "no Authorization: Bearer token")
  end
  local token = header:match("^[Bb][Ee][Aa][Rr][Ee][Rr] +([%w%-_%.=+/]+) *$")
  if not token then
    return nil, unauthorized(ctx, "malformed", "the Authorization header is not 'Bearer <token>'")
  end
  local rc = tonumber(C.tr_ffi_auth_verify(token, #token, payload_buf, PAYLOAD_SIZE, len_out, errmsg))
  if rc ~= 0 then
    if rc == NO_KEYS then
      require("triage").log("auth: a protected route was asked for, but the server has no --token-keys")
      return nil, ctx:status(500):json { error = "authentication is not configured on this server" }
    end
    return nil, unauthorized(ctx, REASONS[rc] or "malformed", ffi_string(errmsg[0]))
  end
  local principal, why = principal_of(ffi_string(payload_buf, len_out[0]))
  if not principal then
    return nil, unauthorized(ctx, "malformed", why)
  end
  ctx_module.set_principal(ctx, principal)
  return principal
end
M.authenticate_request = authenticate

-- Middleware: a valid token, whatever its role.
function M.authenticate(ctx, nxt)
  if authenticate(ctx) then
    return nxt()
  end
end

local function check_name(opts, key)
  local v = opts[key]
  if v ~= nil and (type(v) ~= "string" or v == "") then
    error(("triage.auth.require: %s must be a name, got %s"):format(key, type(v)), 0)
  end
  return v
end

-- Middleware factory. opts:
--   roles          the roles allowed (required): any of patient, investigator, monitor, admin;
--   trial_param    a route parameter naming the trial: the token's trial(s) must include it (an
--                  admin's token is for every trial);
--   patient_param  a route parameter naming the patient: a patient's sub must equal it;
--   patient_field  a field of the JSON body naming the patient: a patient's sub must equal it (a
--                  body without it, or not JSON, is left to the handler's validation).
-- A route that admits patients must say which patient it is about (patient_param or patient_field).
function M.require(opts)
  if type(opts) ~= "table" or type(opts.roles) ~= "table" or #opts.roles == 0 then
    error("triage.auth.require{ roles = { 'investigator', ... }, trial_param = ..., patient_param = ..., "
      .. "patient_field = ... }: roles is required", 0)
  end
  local allowed = {}
  for _, role in ipairs(opts.roles) do
    if not M.ROLES[role] then
      error(("triage.auth.require: unknown role '%s' (patient, investigator, monitor, admin)"):format(tostring(role)), 0)
    end
    allowed[role] = true
  end
  for key in pairs(opts) do
    if key ~= "roles" and key ~= "trial_param" and key ~= "patient_param" and key ~= "patient_field" then
      error(("triage.auth.require: unknown option '%s'"):format(tostring(key)), 0)
    end
  end
  local trial_param = check_name(opts, "trial_param")
  local patient_param = check_name(opts, "patient_param")
  local patient_field = check_name(opts, "patient_field")
  if allowed.patient and not patient_param and not patient_field then
    error("triage.auth.require: roles include 'patient' but neither patient_param nor patient_field says "
      .. "which patient the route is about", 0)
  end

  return function(ctx, nxt)
    local p = authenticate(ctx)
    if not p then
      return
    end
    if not allowed[p.role] then
      return forbidden(ctx)
    end
    if trial_param and p.role ~= "admin" then
      local trial = ctx:param(trial_param)
      if not (trial and p.in_trial[trial]) then
        return forbidden(ctx)
      end
    end
    if p.role == "patient" then
      if patient_param and ctx:param(patient_param) ~= p.sub then
        return forbidden(ctx)
      end
      if patient_field then
        local body = ctx:json_body()
        if type(body) == "table" and body[patient_field] ~= nil and body[patient_field] ~= p.sub then
          return forbidden(ctx)
        end
      end
    end
    return nxt()
  end
end

return M
