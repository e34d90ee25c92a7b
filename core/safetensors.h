/* safetensors.h: read-only access to Hugging Face safetensors checkpoints.
 *
 * File format (all integers little-endian):
 *   u64  N            length of the JSON header in bytes
 *   u8   header[N]    JSON object: tensor name -> {"dtype": "BF16"|"F16"|"F32"|
 *                     "F64"|..., "shape": [d0, d1, ...], "data_offsets": [b, e]}
 *                     plus an optional "__metadata__" object of strings
 *   u8   data[]       tensor bytes; [b, e) is relative to the start of data,
 *                     row-major, e - b == prod(shape) * sizeof(dtype)
 *
 * A model folder holds model.safetensors, or shards listed by
 * model.safetensors.index.json ({"weight_map": {name: file}}).  Files are
 * mapped read-only; nothing is copied unless a tensor is misaligned for its
 * dtype.  Every check failure names the file and the tensor or field.
 */
#ifndef TM_SAFETENSORS_H
#define TM_SAFETENSORS_H

#include "common.h"
#include "dtype.h"

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    int dtype;             /* tm_dtype, or -1 when the dtype is not one we read */
    char dtype_str[16];    /* as written in the header                          */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;
    const void *data;      /* into the mapping (or an aligned copy)             */
    int file;              /* index into st_set.files                           */
} st_tensor;

typedef struct {
    char *path;
    void *map;             /* whole file, PROT_READ, MAP_PRIVATE */
    size_t size;
    size_t data_start;     /* 8 + header length */
} st_file;

typedef struct {
    st_file *files;
    int n_files;
    st_tensor *tensors;
    int n_tensors;
    int *slots;            /* open-addressing hash: tensor index + 1, 0 = empty */
    size_t n_slots;
    void **copies;         /* aligned copies owned by the set */
    int n_copies;
    int sparse;            /* st_advise_sparse: only the used tensors are read */
} st_set;

/* Open DIR/model.safetensors or the shards named by DIR/model.safetensors.index.json. */
tm_status st_open_dir(st_set *s, const char *dir, tm_err *err);
/* Open a single file (used by tests and tools). */
tm_status st_open_file(st_set *s, const char *path, tm_err *err);
void st_close(st_set *s);

/* Tensors with no file behind them (synthetic weights): add them with
 * data == NULL and file == -1, then st_index() once; the owner fills data. */
void st_add_virtual(st_set *s, const char *name, tm_dtype dtype, int ndim, const int64_t *shape);
void st_index(st_set *s);

const st_tensor *st_find(const st_set *s, const char *name);
size_t st_numel(const st_tensor *t);
/* Path of the file holding t. */
const char *st_path(const st_set *s, const st_tensor *t);
/* For a reader of a subset (a worker's experts): no read-ahead around a
 * page fault (MADV_RANDOM on every file), so the neighbours' tensors are not
 * read from disk; st_prefetch then reads each used tensor as a whole.  A
 * full load keeps the kernel's sequential read-ahead, which is faster. */
void st_advise_sparse(st_set *s);
/* After st_advise_sparse: start reading a mapped tensor's pages, exactly
 * its range (MADV_WILLNEED); a no-op otherwise. */
void st_prefetch(const st_set *s, const st_tensor *t);
/* Drop a tensor's pages from this process's resident set (after a copy). */
void st_release(const st_set *s, const st_tensor *t);

#endif
