/* rodb.h: opening a results database for reading only (sim/rodb.c): works in a read-only folder,
 * leaves no -wal or -shm file behind, and notes the file as an input no output may replace. */
#ifndef MOE_RODB_H
#define MOE_RODB_H

#include <sqlite3.h>

/* Open path for queries only; returns an SQLite result code (*db may be set on failure, as with
 * sqlite3_open_v2: close it). */
int moe_rodb_open(const char *path, sqlite3 **db);

#endif
