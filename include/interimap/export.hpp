// INTERIMAP_API marks the library's public API: libinterimap is built with
// hidden visibility (-fvisibility=hidden), so only what carries this mark
// is exported from the shared library; everything in interimap::detail
// stays private.  Exception classes carry it too, so that their type
// information is one across the library and the program (a catch clause
// in the program matches what the library throws).
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define INTERIMAP_API __attribute__((visibility("default")))
// For the private parts of exported classes (their Impl and State
// structs, defined in the library's sources): a nested class takes the
// visibility of the class around it unless told otherwise.
#define INTERIMAP_LOCAL __attribute__((visibility("hidden")))
#else
#define INTERIMAP_API
#define INTERIMAP_LOCAL
#endif
