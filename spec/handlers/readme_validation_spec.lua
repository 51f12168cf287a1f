-- The example spec of README.md's "Validation and questionnaires", run as it is written there: the
-- ```lua block that starts with "-- README example: a PHQ-9 spec".
local MARK = "-- README example: a PHQ-9 spec"

local f = assert(io.open("README.md", "rb"))
local readme = f:read("*a")
f:close()

local code = readme:match("```lua\n(" .. MARK:gsub("%p", "%%%0") .. "\n.-)```")
assert(code, "README.md has no ```lua block starting with " .. MARK)
local chunk = assert(loadstring(code, "=README.md (" .. MARK .. ")"))
setfenv(chunk, getfenv(1)) -- busted's describe, it and assert
chunk()
