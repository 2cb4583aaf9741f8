// INTERIMAP_API marks the library's public API: libinterimap is built with
// hidden visibility (-fvisibility=hidden), so only what carries this mark
// is exported from the shared library; everything in interimap::detail
// stays private.  Exception classes carry it too, so that their type
// information is one across the library and the program (a catch clause
// in the program matches what the library throws).
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define INTERIMAP_API __attribute__((visibility("default")))
#else
#define INTERIMAP_API
#endif
