# The whole suite under ctest: C unit tests, busted specs (in-process handler specs, integration
# specs against build/triage over sockets, one ctest test per spec file) and the benchmark smoke run.
find_program(BUSTED busted REQUIRED)
set(TRIAGE_SPEC_ENV
  "TRIAGE_BIN=$<TARGET_FILE:triage>"
  "TRIAGE_TEST_LIB=$<TARGET_FILE:triage_test>"
  "TRIAGE_ROOT=${CMAKE_SOURCE_DIR}")

include(${CMAKE_SOURCE_DIR}/spec/c/tests.cmake OPTIONAL)

file(GLOB TRIAGE_SPEC_FILES RELATIVE ${CMAKE_SOURCE_DIR}
  ${CMAKE_SOURCE_DIR}/spec/handlers/*_spec.lua
  ${CMAKE_SOURCE_DIR}/spec/integration/*_spec.lua)
foreach(spec ${TRIAGE_SPEC_FILES})
  get_filename_component(dir ${spec} DIRECTORY)
  get_filename_component(dir ${dir} NAME)
  get_filename_component(name ${spec} NAME_WE)
  string(REGEX REPLACE "_spec$" "" name ${name})
  add_test(NAME lua_${dir}_${name}
    COMMAND ${BUSTED} --lua=luajit -o utfTerminal ${spec}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(lua_${dir}_${name} PROPERTIES ENVIRONMENT "${TRIAGE_SPEC_ENV}")
  if(dir STREQUAL "integration")
    # Integration specs bind loopback ports and load both cores: one at a time.
    set_tests_properties(lua_${dir}_${name} PROPERTIES RUN_SERIAL TRUE)
  endif()
endforeach()

if(EXISTS ${CMAKE_SOURCE_DIR}/bench/run)
  add_test(NAME bench_smoke COMMAND ${CMAKE_SOURCE_DIR}/bench/run --smoke
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(bench_smoke PROPERTIES ENVIRONMENT "${TRIAGE_SPEC_ENV}" RUN_SERIAL TRUE)
endif()
