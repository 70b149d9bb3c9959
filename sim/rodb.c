/* rodb.c: opening a results database for the read-only commands (report, plot, compare) so
 * that they work in a read-only folder and leave no -wal or -shm file behind.
 *
 * moesim's databases are in WAL mode. A connection opened SQLITE_OPEN_READONLY cannot remove the
 * -wal and -shm files when it closes (so `moesim report` used to leave them), and in a folder it
 * cannot write it cannot create them (so it failed). Three cases:
 *   - the file and its folder are writable: opened read-write but with PRAGMA query_only, so
 *     SQLite handles WAL as for any client (it reads a writer's committed points, and the last
 *     connection to close removes -wal and -shm); nothing is ever written;
 *   - otherwise, without a -wal file: no writer is active (a WAL writer keeps a -wal file while
 *     it is connected) and this process could not create the -shm file a lock needs, so the
 *     file is complete and is opened immutable ("file:PATH?immutable=1"): no lock, no -shm.
 *     (A writer with more rights that starts meanwhile writes into its own -wal file; only its
 *     checkpoint, at 1000 pages or when it closes, touches the file read here.)
 *   - otherwise (a -wal file exists next to a file moesim cannot write): SQLITE_OPEN_READONLY,
 *     which reads through the existing -wal and -shm files (SQLite 3.22 and later).
 * The file is also noted as an input (moe_outfile_note_input): no output may replace it. */
#include "rodb.h"

#include "moe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "file:" + path percent-encoded (every byte but unreserved ones and '/') + suffix; malloc'd. */
static char *uri_of(const char *path, const char *suffix)
{
    size_t n = strlen(path), ns = strlen(suffix);
    char *u = malloc(5 + 3 * n + ns + 1), *p = u;
    if (!u)
        return NULL;
    p += sprintf(p, "file:");
    for (const unsigned char *s = (const unsigned char *)path; *s; s++) {
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
            strchr("/-._~", *s))
            *p++ = (char)*s;
        else
            p += sprintf(p, "%%%02X", *s);
    }
    memcpy(p, suffix, ns + 1);
    return u;
}

/* 1 when the folder holding path is writable by this process. */
static int folder_writable(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return access(".", W_OK) == 0;
    if (slash == path)
        return access("/", W_OK) == 0;
    char *dir = malloc((size_t)(slash - path) + 1);
    if (!dir)
        return 0;
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    int ok = access(dir, W_OK) == 0;
    free(dir);
    return ok;
}

int moe_rodb_open(const char *path, sqlite3 **db)
{
    *db = NULL;
    if (moe_outfile_note_input(path))
        return SQLITE_NOMEM;
    if (access(path, W_OK) == 0 && folder_writable(path)) {
        int rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(*db, "PRAGMA query_only = 1", NULL, NULL, NULL);
        return rc;
    }
    size_t n = strlen(path);
    char *wal = malloc(n + 5);
    if (!wal)
        return SQLITE_NOMEM;
    memcpy(wal, path, n);
    memcpy(wal + n, "-wal", 5);
    int has_wal = access(wal, F_OK) == 0;
    free(wal);
    if (has_wal)
        return sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL);
    char *uri = uri_of(path, "?immutable=1");
    if (!uri)
        return SQLITE_NOMEM;
    int rc = sqlite3_open_v2(uri, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
    free(uri);
    return rc;
}
