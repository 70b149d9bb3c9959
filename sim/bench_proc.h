/* bench_proc.h: what `moesim bench` needs to run its PyTorch references (the layer's, the
 * training step's and the routers' twins): a temporary folder for the inputs they read, removed
 * on exit and on SIGINT, SIGTERM and SIGHUP, and child processes started from an argument vector
 * by posix_spawnp, never through a shell, so that no path (the interpreter's, the script's,
 * $TMPDIR) is ever parsed as a command. Every child runs with OMP_WAIT_POLICY=passive: its
 * threads sleep between its calls instead of spinning on the cores moesim measures on. */
#ifndef MOE_BENCH_PROC_H
#define MOE_BENCH_PROC_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/* A fresh folder named NAME-XXXXXX (mkdtemp) into dir: in /dev/shm when in_memory (the inputs
 * stay in memory) and it is writable, else in $TMPDIR (/tmp when TMPDIR is unset or empty). 0,
 * or an error naming what asked for it. */
int bench_tmpdir(char *dir, size_t len, const char *name, int in_memory);

/* From now on a signal (SIGINT, SIGTERM, SIGHUP) removes dir's files named in files (a
 * NULL-terminated list that must outlive the guard) and dir, then ends the process by that
 * signal. dir NULL: no folder guarded (the handlers stay, doing nothing but ending). */
void bench_guard(const char *dir, const char *const *files);

/* Removes dir and every file in it; a message on stderr, naming who (e.g. "bench --routing"),
 * when it cannot. */
void bench_rmdir(const char *dir, const char *who);

/* Starts argv[0] (looked up in PATH when it has no '/') with the arguments argv (NULL-terminated)
 * and OMP_WAIT_POLICY=passive, its stdin, stdout and stderr the descriptors in, out and err
 * (-1: this process's own); close1 and close2 (the other ends of the caller's pipes, or -1) are
 * closed in the child. The child's process id, or -1 when it could not be started (no such
 * program, out of memory). */
pid_t bench_spawn(char *const argv[], int in, int out, int err, int close1, int close2);

/* A child process whose stdin and stdout are piped to us (its stderr is ours): a reference
 * that takes requests on its stdin and answers on its stdout. */
typedef struct {
    pid_t pid; /* -1: none */
    FILE *to, *from;
} bench_child;

/* Starts argv (bench_spawn) as ch: 0, or -1 (ch->pid -1) when it could not be started or its
 * pipes could not be opened (then it was ended as bench_child_stop ends it). From then on
 * SIGPIPE is ignored: a request written to a child that ended is an error, not our end. */
int bench_child_start(bench_child *ch, char *const argv[]);

/* Closes its stdin (a child serving requests ends there) and stdout and waits for it: its exit
 * status, 128 + the signal that ended it, or -1 when none was started. */
int bench_child_stop(bench_child *ch);

/* Waits for process pid: its exit status, 128 + the signal that ended it, or -1. */
int bench_wait(pid_t pid);

/* Runs argv (bench_spawn, stdin /dev/null, stderr this process's) and waits for it: its
 * standard output as a string (malloc'd; NULL when out of memory) and in *status its exit
 * status, 128 + a signal, or 127 when it could not be started (as a shell says of a command it
 * cannot find). */
char *bench_capture(char *const argv[], int *status);

/* argv as one line a user can paste into a shell, with the environment bench_spawn gives it
 * (`OMP_WAIT_POLICY=passive 'python' 'script' ...`, each argument in single quotes, a ' in one
 * as '\''), into buf; "..." at the end when it does not fit. */
void bench_argv_text(char *const argv[], char *buf, size_t len);

#endif
