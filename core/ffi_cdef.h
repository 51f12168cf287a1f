/*
 * lua/triage/cdef.h for C: the FFI declarations (read by ffi.cdef too, so that file can hold no
 * include guard or #include of its own) with what they need, included once.
 */
#ifndef TR_FFI_CDEF_H
#define TR_FFI_CDEF_H

#include <stddef.h>
#include <stdint.h>

#define TR_FFI_EXPORT __attribute__((visibility("default")))

#include "lua/triage/cdef.h"

#endif
