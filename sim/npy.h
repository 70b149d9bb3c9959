/* npy.h: NumPy .npy files (format versions 1.0, 2.0, 3.0), C order only.
 * Reads float32/float64/int32/int64 little-endian arrays of 0..4 dimensions (0-d: one value);
 * anything else (Fortran order, big-endian, other dtypes, truncated data, bad header) is a
 * clear error naming the file. Writes float32/float64/int32/int64 arrays to a temporary name,
 * then renames. */
#ifndef MOE_NPY_H
#define MOE_NPY_H

#include <stddef.h>
#include <stdint.h>

enum moe_dtype { MOE_F32 = 0, MOE_F64 = 1, MOE_I32 = 2, MOE_I64 = 3 };

typedef struct {
    int dtype;        /* enum moe_dtype */
    int ndim;         /* 0..4 */
    size_t shape[4];
    size_t count;     /* product of shape */
    void *data;       /* count elements of dtype, native little-endian */
} moe_npy;

int moe_npy_read(const char *path, moe_npy *out);
/* Parse a whole .npy file held in memory (len bytes at buf); name stands for the file in
 * errors. Same checks as moe_npy_read, which shares the parser; out->data is a copy. */
int moe_npy_parse(const void *buf, size_t len, const char *name, moe_npy *out);
void moe_npy_free(moe_npy *a);              /* frees data; NULL-safe */
/* Converted copies (malloc'd; caller frees). Integer -> float conversions are refused for
 * _double/_float; float -> int refused for _int64. `what` names the input in errors. */
int moe_npy_as_double(const moe_npy *a, const char *what, double **out);
int moe_npy_as_float(const moe_npy *a, const char *what, float **out);
int moe_npy_as_int64(const moe_npy *a, const char *what, int64_t **out);
/* Write arrays (C order). */
int moe_npy_write(const char *path, int dtype, const void *data, int ndim, const size_t *shape);

#endif
