# The fault-injection shim (spec/fault/faultfs.c) and its own tests. Included from spec/tests.cmake
# after TRIAGE_SPEC_ENV is set:
#
#   include(${CMAKE_SOURCE_DIR}/spec/fault/fault.cmake)
#
# - libtriage_faultfs.so, an LD_PRELOAD library that makes fsync/fdatasync or writes on the database
#   files fail on demand (its header says how); its path goes to every busted spec as
#   TRIAGE_FAULT_LIB (spec/integration/durability_spec.lua preloads it into a server).
# - fault_shim: the shim on its own (spec/fault/test_faultfs.c: which calls fail, duplicated and
#   reused descriptors, the control file's syntax, threads, fork).
# - fault_shim_sqlite: the shim under the Debian sqlite3 CLI (spec/fault/test-sqlite): a COMMIT in WAL
#   mode with synchronous=FULL fails with "disk I/O error" under fsync=EIO, an INSERT of a large blob
#   with "database or disk is full" under write=ENOSPC, and both succeed once the fault is cleared.
# Both are built without sanitizers (TRIAGE_SANITIZE): the shim is preloaded into programs that are
# not instrumented (sqlite3, and luajit would be next), where an instrumented library cannot load.
include_guard(GLOBAL)

find_package(Threads REQUIRED)
set(TRIAGE_FAULT_DIR ${CMAKE_CURRENT_LIST_DIR})
set(TRIAGE_FAULT_NO_SANITIZE)
if(TRIAGE_SANITIZE)
  set(TRIAGE_FAULT_NO_SANITIZE -fno-sanitize=all)
endif()

add_library(triage_faultfs SHARED ${TRIAGE_FAULT_DIR}/faultfs.c)
set_target_properties(triage_faultfs PROPERTIES C_VISIBILITY_PRESET hidden)
target_compile_options(triage_faultfs PRIVATE ${TRIAGE_FAULT_NO_SANITIZE})
target_link_options(triage_faultfs PRIVATE ${TRIAGE_FAULT_NO_SANITIZE})
target_link_libraries(triage_faultfs PRIVATE ${CMAKE_DL_LIBS} Threads::Threads)

add_executable(triage_faultfs_test ${TRIAGE_FAULT_DIR}/test_faultfs.c)
target_compile_options(triage_faultfs_test PRIVATE ${TRIAGE_FAULT_NO_SANITIZE})
target_link_options(triage_faultfs_test PRIVATE ${TRIAGE_FAULT_NO_SANITIZE})
target_link_libraries(triage_faultfs_test PRIVATE Threads::Threads)

set(TRIAGE_FAULT_SCRATCH ${CMAKE_BINARY_DIR}/fault-shim)
add_test(NAME fault_shim
  COMMAND sh -c [[rm -rf "$0" && mkdir -p "$0" && exec "$1" "$0/files"]]
    ${TRIAGE_FAULT_SCRATCH} $<TARGET_FILE:triage_faultfs_test>)
set_tests_properties(fault_shim PROPERTIES
  ENVIRONMENT "LD_PRELOAD=$<TARGET_FILE:triage_faultfs>;TRIAGE_FAULT_CONTROL=${TRIAGE_FAULT_SCRATCH}/control;TRIAGE_FAULT_LOG=${TRIAGE_FAULT_SCRATCH}/faults.log"
  LABELS "fault" TIMEOUT 120)

add_test(NAME fault_shim_sqlite COMMAND ${TRIAGE_FAULT_DIR}/test-sqlite $<TARGET_FILE:triage_faultfs>)
set_tests_properties(fault_shim_sqlite PROPERTIES LABELS "fault" TIMEOUT 120)

list(APPEND TRIAGE_SPEC_ENV "TRIAGE_FAULT_LIB=$<TARGET_FILE:triage_faultfs>")
