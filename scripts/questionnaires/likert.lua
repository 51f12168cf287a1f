-- What the sample app's questionnaires share: items answered on one scale and summed into a total,
-- with severity bands and a rule for unanswered items. A questionnaire (phq9.lua, gad7.lua) is data
-- given to likert.define plus, where it needs one, a small scoring function of its own.
local schema = require "triage.schema"

local M = {}

-- "Over the last 2 weeks, how often have you been bothered by ...": the answers of PHQ-9 and GAD-7.
M.OVER_THE_LAST_TWO_WEEKS = {
  { value = 0, loinc = "LA6568-5", text = "Not at all" },
  { value = 1, loinc = "LA6569-3", text = "Several days" },
  { value = 2, loinc = "LA6570-1", text = "More than half the days" },
  { value = 3, loinc = "LA6571-9", text = "Nearly every day" },
}

-- The total of n answered items out of count, the unanswered ones prorated from the mean of the
-- answered: sum * count / n, rounded to the nearest whole number, halves up (computed in integers:
-- floor((2 * sum * count + n) / (2 * n))).
function M.prorate(sum, n, count)
  if n == count then
    return sum
  end
  return math.floor((2 * sum * count + n) / (2 * n))
end

-- The band of a total: bands are { min, max, name }.
function M.band(q, total)
  for _, b in ipairs(q.bands) do
    if total >= b[1] and total <= b[2] then
      return b[3]
    end
  end
  error(("%s: no band for the total %s"):format(q.id, tostring(total)), 2)
end

-- The questionnaire's answers as a schema: an object keyed by the items' LOINC codes, each an
-- integer from the scale or null (unanswered, as is an absent item); no other keys.
local function answers_schema(q)
  local values, fields = {}, {}
  for i, a in ipairs(q.answers) do
    values[i] = a.value
  end
  for _, item in ipairs(q.items) do
    fields[item.loinc] = { type = "integer", nullable = true, enum = values,
      description = ("%d. %s"):format(item.n, item.text) }
  end
  return schema.compile { type = "object", fields = fields, additional = false }
end

-- The sum and bands: { total, band, answered, prorated, missing = { LOINC codes }, flags = {} }, or
-- nil and the failures ({ path, reason }) when more items than q.max_missing are unanswered.
function M.score(q, answers, path)
  local sum, n, missing = 0, 0, {}
  for _, item in ipairs(q.items) do
    local v = answers[item.loinc]
    if type(v) == "number" then
      sum, n = sum + v, n + 1
    else
      missing[#missing + 1] = item.loinc
    end
  end
  if #missing > q.max_missing then
    local errs = {}
    for _, code in ipairs(missing) do
      errs[#errs + 1] = { path = schema.path(path or "", code), reason = ("is unanswered: %s is scored with at most %d"
        .. " of its %d items unanswered, %d are"):format(q.name, q.max_missing, #q.items, #missing) }
    end
    return nil, errs
  end
  local total = M.prorate(sum, n, #q.items)
  return { total = total, band = M.band(q, total), answered = n, prorated = n < #q.items, missing = missing,
    flags = {}, safety = {} }
end

-- A questionnaire from its data:
--   id, name, panel (LOINC of the panel), total_code (LOINC of the total score), items (array of
--   { loinc, text }), answers (the scale), bands ({ min, max, name }, covering 0 to the maximum),
--   max_missing (unanswered items still scored), and optionally score(q, answers, path) for what
--   the plain sum does not cover (it calls likert.score and adds to the result).
-- Adds n (the item's number), by_number, max_total, schema (of the answers) and check.
function M.define(q)
  for _, key in ipairs { "id", "name", "panel", "total_code", "items", "answers", "bands", "max_missing" } do
    if q[key] == nil then
      error(("questionnaire %s: %s is missing"):format(tostring(q.id), key), 2)
    end
  end
  local top = q.answers[#q.answers].value
  q.max_total = top * #q.items
  q.by_number = {}
  for i, item in ipairs(q.items) do
    item.n = i
    q.by_number[i] = item
  end
  local covered = 0
  for _, b in ipairs(q.bands) do
    if b[1] ~= covered then
      error(("questionnaire %s: the bands leave a gap or overlap at %d"):format(q.id, covered), 2)
    end
    covered = b[2] + 1
  end
  if covered ~= q.max_total + 1 then
    error(("questionnaire %s: the bands end at %d, the total at %d"):format(q.id, covered - 1, q.max_total), 2)
  end
  q.schema = answers_schema(q)
  q.score = q.score or M.score

  -- The answers validated and scored: the result of score, or nil and every failure.
  function q.check(answers, path)
    path = path or ""
    local ok, errs = schema.validate(answers, q.schema, path)
    if not ok then
      return nil, errs
    end
    return q.score(q, answers, path)
  end
  return q
end

return M
