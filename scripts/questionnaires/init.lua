-- The questionnaires POST /api/epro/submit scores, by the name a submission gives
-- ("questionnaire": "phq9"). To add one: a file beside this one (its data given to likert.define)
-- and a line here.
local BY_NAME = {
  phq9 = require "questionnaires.phq9",
  gad7 = require "questionnaires.gad7",
}

local M = {}

local names = {}
for name in pairs(BY_NAME) do
  names[#names + 1] = name
end
table.sort(names)

-- The questionnaire of that name, or nil.
function M.get(name)
  return BY_NAME[name]
end

-- The names, sorted.
function M.names()
  return names
end

return M
