-- PHQ-9, the Patient Health Questionnaire depression scale (LOINC panel 44249-1, total 44261-6).
-- Nine items answered 0-3 over the last two weeks; total 0-27.
-- Unanswered items: one or two are prorated from the mean of the answered items (NHS Data
-- Dictionary, PHQ-9; rounding as stated in likert.prorate); three or more: not scored (400).
-- Safety: an answer above 0 to item 9 (thoughts of being better off dead or of self-harm) is flagged
-- whatever the total, and the intake stores a safety event with the submission.
local likert = require "questionnaires.likert"

local ITEM9 = "44260-8"

return likert.define {
  id = "phq9",
  name = "PHQ-9",
  panel = "44249-1",
  total_code = "44261-6",
  items = {
    { loinc = "44250-9", text = "Little interest or pleasure in doing things" },
    { loinc = "44255-8", text = "Feeling down, depressed, or hopeless" },
    { loinc = "44259-0", text = "Trouble falling or staying asleep, or sleeping too much" },
    { loinc = "44254-1", text = "Feeling tired or having little energy" },
    { loinc = "44251-7", text = "Poor appetite or overeating" },
    { loinc = "44258-2", text = "Feeling bad about yourself, or that you are a failure or have let yourself"
      .. " or your family down" },
    { loinc = "44252-5", text = "Trouble concentrating on things, such as reading the newspaper or watching"
      .. " television" },
    { loinc = "44253-3", text = "Moving or speaking so slowly that other people could have noticed, or the"
      .. " opposite: being so fidgety or restless that you have been moving around a lot more than usual" },
    { loinc = ITEM9, text = "Thoughts that you would be better off dead, or of hurting yourself in some way" },
  },
  answers = likert.OVER_THE_LAST_TWO_WEEKS,
  bands = {
    { 0, 4, "minimal" },
    { 5, 9, "mild" },
    { 10, 14, "moderate" },
    { 15, 19, "moderately severe" },
    { 20, 27, "severe" },
  },
  max_missing = 2,

  score = function(q, answers, path)
    local result, errs = likert.score(q, answers, path)
    if not result then
      return nil, errs
    end
    local item9 = answers[ITEM9]
    if type(item9) == "number" and item9 > 0 then
      result.flags[#result.flags + 1] = "phq9_item9_positive"
      result.safety[#result.safety + 1] = { flag = "phq9_item9_positive", item = ITEM9, answer = item9 }
    end
    return result
  end,
}
