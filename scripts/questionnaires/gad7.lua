-- GAD-7, the Generalized Anxiety Disorder scale (LOINC panel 69737-5, total 70274-6).
-- Seven items answered 0-3 over the last two weeks; total 0-21.
-- Unanswered items: one is prorated from the mean of the six answered (rounding as stated in
-- likert.prorate); two or more: not scored (400). One of seven keeps the imputed share (14%) under
-- PHQ-9's two of nine (22%).
local likert = require "questionnaires.likert"

return likert.define {
  id = "gad7",
  name = "GAD-7",
  panel = "69737-5",
  total_code = "70274-6",
  items = {
    { loinc = "69725-0", text = "Feeling nervous, anxious, or on edge" },
    { loinc = "68509-9", text = "Not being able to stop or control worrying" },
    { loinc = "69733-4", text = "Worrying too much about different things" },
    { loinc = "69734-2", text = "Trouble relaxing" },
    { loinc = "69735-9", text = "Being so restless that it is hard to sit still" },
    { loinc = "69689-8", text = "Becoming easily annoyed or irritable" },
    { loinc = "69736-7", text = "Feeling afraid, as if something awful might happen" },
  },
  answers = likert.OVER_THE_LAST_TWO_WEEKS,
  bands = {
    { 0, 4, "minimal" },
    { 5, 9, "mild" },
    { 10, 14, "moderate" },
    { 15, 21, "severe" },
  },
  max_missing = 1,
}
