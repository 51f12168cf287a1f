/*
 * The request API exported to Lua through the LuaJIT FFI (the tr_ffi_* functions).
 * The declarations and their contracts are in lua/triage/cdef.h, shared verbatim with ffi.cdef.
 */
#ifndef TR_FFI_API_H
#define TR_FFI_API_H

#include <stddef.h>
#include <stdint.h>

#define TR_FFI_EXPORT __attribute__((visibility("default")))

#include "lua/triage/cdef.h"

#endif
