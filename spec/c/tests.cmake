# C unit tests of the core, run by ctest. Included from the top CMakeLists.txt, after the
# triage_common target is defined:
#
#   include(spec/c/tests.cmake)
#
# Builds triage_unit (the runner: spec/c/*.c, core/testing.c, core/privilege.c and the triage_common
# objects) and adds
# one ctest test per entry of the TEST_LIST in spec/c/test_main.c: c_<name>, running
# `triage_unit <name>`. `triage_unit all` runs them all in one go.
include_guard(GLOBAL)

if(NOT TARGET triage_common)
  message(FATAL_ERROR "spec/c/tests.cmake: include it after the triage_common target is defined")
endif()

set(TR_UNIT_DIR ${CMAKE_CURRENT_LIST_DIR})
get_filename_component(TR_UNIT_CORE_DIR ${CMAKE_CURRENT_LIST_DIR}/../../core ABSOLUTE)

if(NOT EV_LIBRARY)
  find_library(EV_LIBRARY ev REQUIRED)
endif()
if(NOT HTTP_PARSER_LIBRARY)
  find_library(HTTP_PARSER_LIBRARY http_parser REQUIRED)
endif()

file(GLOB TR_UNIT_SOURCES CONFIGURE_DEPENDS ${TR_UNIT_DIR}/*.c)
# lua_alloc.c is the server's (it calls the Lua API, which triage_common must not: see triage_test).
add_executable(triage_unit ${TR_UNIT_SOURCES} ${TR_UNIT_CORE_DIR}/testing.c ${TR_UNIT_CORE_DIR}/privilege.c
  ${TR_UNIT_CORE_DIR}/spawn.c ${TR_UNIT_CORE_DIR}/lua_alloc.c)
target_include_directories(triage_unit PRIVATE ${TR_UNIT_DIR})
target_link_libraries(triage_unit PRIVATE triage_common ${EV_LIBRARY} ${HTTP_PARSER_LIBRARY})

# The test names, read from the one list in test_main.c (re-read whenever that file changes).
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${TR_UNIT_DIR}/test_main.c)
# (Read as one string: the list's lines end with '\', which would escape file(STRINGS)' separators.)
file(READ ${TR_UNIT_DIR}/test_main.c TR_UNIT_MAIN)
string(REGEX MATCHALL "\n[ \t]*TEST_ENTRY\\([A-Za-z0-9_]+\\)" TR_UNIT_ENTRIES "${TR_UNIT_MAIN}")
set(TR_UNIT_TESTS)
foreach(entry IN LISTS TR_UNIT_ENTRIES)
  string(REGEX REPLACE "^\n[ \t]*TEST_ENTRY\\(([A-Za-z0-9_]+)\\)$" "\\1" name "${entry}")
  list(APPEND TR_UNIT_TESTS ${name})
endforeach()
if(NOT TR_UNIT_TESTS)
  message(FATAL_ERROR "spec/c/tests.cmake: no TEST_ENTRY(...) lines found in ${TR_UNIT_DIR}/test_main.c")
endif()

enable_testing()
foreach(name IN LISTS TR_UNIT_TESTS)
  add_test(NAME c_${name} COMMAND triage_unit ${name})
  set_tests_properties(c_${name} PROPERTIES LABELS "unit;c" TIMEOUT 120)
endforeach()
