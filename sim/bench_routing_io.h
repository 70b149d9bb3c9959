/* bench_routing_io.h: what `moesim bench --routing` shares with the PyTorch twins of its
 * routers (bench_routing_io.c): the logits and draws as .npy in a temporary folder (bench_proc.h
 * makes, guards and removes it), the plan check, and a running twin process
 * (sim/bench_torch_routing.py serve) that times a twin whenever asked, so that each twin is
 * timed right beside moesim's router. */
#ifndef MOE_BENCH_ROUTING_IO_H
#define MOE_BENCH_ROUTING_IO_H

#include "bench_proc.h"

#include <stdio.h>
#include <sys/types.h>

/* The logits (n,E) and draws (n) as dir/logits.npy and dir/uniforms.npy. */
int brio_write_inputs(const char *dir, const double *L, const double *u, int n, int E);

/* The logits brio_write_inputs wrote to dir/logits.npy (format 1.0, float64, count values),
 * mapped read-only: the pages of the shared file itself, so that the logits are in memory once
 * while moesim routes them. *map, *len for munmap; NULL when they cannot be mapped (after
 * moe_fail). */
const double *brio_map_logits(const char *dir, size_t count, void **map, size_t *len);

/* Runs `PYTHON SCRIPT check --dir DIR --cases CASES --threads T --cf 5/4` (each twin's plan on
 * dir's inputs into dir; its output discarded) without a shell and waits for it: its exit
 * status, 128 + the signal that ended it, or -1. */
int brio_check(const char *python, const char *script, const char *dir, const char *cases,
               int threads);

/* Starts the twin, `PYTHON SCRIPT serve --dir DIR --threads T --cf 5/4`, on dir's inputs as t
 * (ended by bench_child_stop) and waits for its "ready N E VERSION" line: 0 when it gave one
 * for n x E, with its torch's version in version (vlen bytes, a terminated string), else (it
 * ended or said something else) its exit status, -1 when unknown. */
int brio_twin_start(bench_child *t, const char *python, const char *script, const char *dir,
                    int threads, int n, int E, char *version, size_t vlen);

/* Times the twin of router (k) on the twin's logits: at least `repeats` passes, more until they
 * add up to min_time seconds, at most max_repeats; 0 with *best (seconds), *passes and *total
 * (their seconds), or -1 when the twin is gone or answered something else. */
int brio_twin_time(bench_child *t, const char *router, int k, int repeats, double min_time,
                   int max_repeats, double *best, int *passes, double *total);

#endif
