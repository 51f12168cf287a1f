# The whole suite under ctest: C unit tests, busted specs (in-process handler specs, integration
# specs against build/triage over sockets, one ctest test per spec file) and the benchmark smoke run.
find_program(BUSTED busted REQUIRED)
set(TRIAGE_SPEC_ENV
  "TRIAGE_BIN=$<TARGET_FILE:triage>"
  "TRIAGE_TEST_LIB=$<TARGET_FILE:triage_test>"
  "TRIAGE_ROOT=${CMAKE_SOURCE_DIR}")

include(${CMAKE_SOURCE_DIR}/spec/c/tests.cmake OPTIONAL)

# The fault-injection shim (LD_PRELOAD; fsync and write failures on the database files), its own
# tests fault_shim and fault_shim_sqlite, and TRIAGE_FAULT_LIB in TRIAGE_SPEC_ENV for the specs.
include(${CMAKE_SOURCE_DIR}/spec/fault/fault.cmake)

# The C modules of core/ depend on each other one way only; and the check does catch a circle.
add_test(NAME layers COMMAND ${CMAKE_SOURCE_DIR}/spec/layers/check-layers ${CMAKE_SOURCE_DIR}/core)
add_test(NAME layers_catches_a_cycle
  COMMAND ${CMAKE_SOURCE_DIR}/spec/layers/check-layers ${CMAKE_SOURCE_DIR}/spec/layers/cycle)
set_tests_properties(layers_catches_a_cycle PROPERTIES PASS_REGULAR_EXPRESSION "depend on each other in a circle: [abc] [abc] [abc]")

# Each fuzz harness over its seed corpus for a few seconds (`make fuzz` runs them longer).
foreach(harness http conn router jwt)
  if(TRIAGE_FUZZ_DIR)
    add_test(NAME fuzz_${harness}
      COMMAND ${CMAKE_SOURCE_DIR}/spec/fuzz/run-fuzzer ${TRIAGE_FUZZ_DIR}/fuzz_${harness}
        ${CMAKE_SOURCE_DIR}/spec/fuzz/corpus/${harness} 5)
  else()
    add_test(NAME fuzz_${harness} COMMAND sh -c "echo 'clang is not installed: run make test' >&2; exit 1")
  endif()
endforeach()

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

# The specs that read or write the store, again on PostgreSQL (lua_pg_<dir>_<name>): with
# TRIAGE_TEST_BACKEND=postgres every server a spec starts gets --store with a database of its own and
# the in-process library a schema of its own (spec/support/backend.lua), on a throwaway PostgreSQL
# started by each busted process (spec/support/postgres.lua). What is SQLite by nature (the fsync
# fault injection, `triage backup`) is pending there, saying so; a PostgreSQL that cannot start fails
# the test with the reason.
set(TRIAGE_PG_SPECS
  integration/store integration/idempotency integration/audit integration/safety
  integration/questionnaires integration/sample_app integration/concurrency integration/shutdown
  integration/durability integration/upgrade integration/auth integration/errors integration/allocations
  handlers/store handlers/audit handlers/sample_app handlers/questionnaires handlers/json)
foreach(spec ${TRIAGE_PG_SPECS})
  get_filename_component(dir ${spec} DIRECTORY)
  get_filename_component(name ${spec} NAME)
  add_test(NAME lua_pg_${dir}_${name}
    COMMAND ${BUSTED} --lua=luajit -o utfTerminal spec/${spec}_spec.lua
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(lua_pg_${dir}_${name} PROPERTIES
    ENVIRONMENT "${TRIAGE_SPEC_ENV};TRIAGE_TEST_BACKEND=postgres")
  if(dir STREQUAL "integration")
    set_tests_properties(lua_pg_${dir}_${name} PROPERTIES RUN_SERIAL TRUE)
  endif()
endforeach()

# With TRIAGE_SANITIZE (make test-asan) every AddressSanitizer, LeakSanitizer or UBSan report fails the
# suite:
# - c_*: triage_unit is instrumented; a report (a leak included) ends it with a non-zero status.
# - lua_handlers_*: busted's luajit is not instrumented but loads the instrumented libtriage_test.so,
#   so the ASan and UBSan runtimes are preloaded (into the interpreters busted runs through as well),
#   and so is libtriage_test.so itself: ffi.load would unload it at exit, before the leak check, and
#   what its globals hold would then be reported as leaked from an unknown module. Memory errors only:
#   libpq brings p11-kit, whose destructor deadlocks at exit, so these runs end with _exit and no
#   leak check (spec/support/helper.lua).
# - lua_integration_*: the server's stderr goes to a spec-owned file that nothing scans, and a worker
#   dying of a report is simply replaced by the master, so the server's runtimes write their reports
#   to files under sanitizer-reports/ instead (the master, the workers, `triage reload`); a leak also
#   makes the master's exit status non-zero. UBSan alone would still print to stderr (its log_path is
#   not honoured next to ASan), so it aborts after its report, and ASan's report of that SIGABRT, with
#   the stack through the __ubsan_handle_* that fired, goes to a file there. That directory is emptied
#   before the first integration spec (sanitizer_reports_reset), and asan_reports_empty, run after the
#   last one, prints every report written and fails if there is any.
#   memory_spec checks that resident memory comes back, so it runs with a 1 MB quarantine and the
#   allocator returning free pages to the system every 100 ms.
#   reload_spec asserts that 1,000 reloads grow the server's resident memory by less than 4 MB: with
#   ASan's default 256 MB quarantine of freed memory per process it grows by ~380 MB, so that spec
#   runs with a 1 MB quarantine (use-after-free is still caught while the block is quarantined or free).
if(TRIAGE_SANITIZE)
  set(TRIAGE_ASAN_OPTIONS "halt_on_error=1:exitcode=1:detect_leaks=1:print_summary=1")
  set(TRIAGE_UBSAN_OPTIONS "halt_on_error=1:exitcode=1:print_stacktrace=1:print_summary=1")
  set(TRIAGE_SANITIZER_REPORTS ${CMAKE_BINARY_DIR}/sanitizer-reports)
  set(TRIAGE_SANITIZER_PRELOAD)
  foreach(runtime libasan.so libubsan.so)
    execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=${runtime}
      OUTPUT_VARIABLE path OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT IS_ABSOLUTE "${path}" OR NOT EXISTS "${path}")
      message(FATAL_ERROR "TRIAGE_SANITIZE: ${CMAKE_C_COMPILER} -print-file-name=${runtime} found no "
        "shared runtime to preload into luajit (TRIAGE_SANITIZE needs gcc)")
    endif()
    get_filename_component(path "${path}" REALPATH)
    list(APPEND TRIAGE_SANITIZER_PRELOAD "${path}")
  endforeach()
  list(APPEND TRIAGE_SANITIZER_PRELOAD "$<TARGET_FILE:triage_test>")
  string(REPLACE ";" ":" TRIAGE_SANITIZER_PRELOAD "${TRIAGE_SANITIZER_PRELOAD}")

  get_property(triage_tests DIRECTORY PROPERTY TESTS)
  foreach(t IN LISTS triage_tests)
    if(t MATCHES "^c_")
      set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT
        "ASAN_OPTIONS=${TRIAGE_ASAN_OPTIONS}" "UBSAN_OPTIONS=${TRIAGE_UBSAN_OPTIONS}")
    elseif(t MATCHES "^lua_(pg_)?handlers_")
      # no leak check in process: libpq's p11-kit deadlocks at exit (spec/support/helper.lua says why)
      string(REPLACE "detect_leaks=1" "detect_leaks=0" asan "${TRIAGE_ASAN_OPTIONS}")
      set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT
        "LD_PRELOAD=${TRIAGE_SANITIZER_PRELOAD}"
        "ASAN_OPTIONS=${asan}" "UBSAN_OPTIONS=${TRIAGE_UBSAN_OPTIONS}")
    elseif(t MATCHES "^lua_(pg_)?integration_")
      set(asan "${TRIAGE_ASAN_OPTIONS}:handle_abort=1:log_path=${TRIAGE_SANITIZER_REPORTS}/asan")
      if(t STREQUAL "lua_integration_reload")
        string(APPEND asan ":quarantine_size_mb=1")
      elseif(t STREQUAL "lua_integration_memory")
        # It checks that freed memory leaves the process: ASan keeps freed blocks in quarantine and
        # its allocator's pages unless told to give them back.
        string(APPEND asan ":quarantine_size_mb=1:allocator_release_to_os_interval_ms=100")
      endif()
      set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT
        "ASAN_OPTIONS=${asan}"
        "UBSAN_OPTIONS=${TRIAGE_UBSAN_OPTIONS}:abort_on_error=1:log_path=${TRIAGE_SANITIZER_REPORTS}/ubsan")
      set_property(TEST ${t} APPEND PROPERTY FIXTURES_REQUIRED sanitizer_reports)
    endif()
  endforeach()

  add_test(NAME sanitizer_reports_reset
    COMMAND sh -c [[rm -rf "$0" && mkdir -p "$0"]] ${TRIAGE_SANITIZER_REPORTS})
  add_test(NAME asan_reports_empty
    COMMAND sh -c [[
      n=0
      for f in "$0"/*; do
        [ -e "$f" ] || continue
        echo "==== $f"
        cat "$f"
        # (a file may hold no more than the statistics of LSan suppressions)
        if grep -qE 'ERROR: [A-Za-z]+Sanitizer|runtime error:|SUMMARY: [A-Za-z]+Sanitizer' "$f"; then
          n=$((n + 1))
        fi
      done
      [ "$n" = 0 ] && exit 0
      echo "$n sanitizer report(s) from triage processes in $0" >&2
      exit 1
    ]] ${TRIAGE_SANITIZER_REPORTS})
  set_tests_properties(sanitizer_reports_reset PROPERTIES FIXTURES_SETUP sanitizer_reports)
  set_tests_properties(asan_reports_empty PROPERTIES FIXTURES_CLEANUP sanitizer_reports)
endif()
