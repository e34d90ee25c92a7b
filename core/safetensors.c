/* safetensors.c: mapping, header parsing and validation of safetensors files. */
#include "safetensors.h"
#include "input.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (256u << 20) /* no real header is near this */

/* ---- name lookup --------------------------------------------------------- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static void index_build(st_set *s)
{
    free(s->slots);
    s->n_slots = 16;
    while (s->n_slots < (size_t)s->n_tensors * 2 + 1) s->n_slots *= 2;
    s->slots = tm_calloc(s->n_slots, sizeof *s->slots);
    for (int i = 0; i < s->n_tensors; i++) {
        size_t j = hash_str(s->tensors[i].name) & (s->n_slots - 1);
        while (s->slots[j]) j = (j + 1) & (s->n_slots - 1);
        s->slots[j] = i + 1;
    }
}

const st_tensor *st_find(const st_set *s, const char *name)
{
    if (!s->slots) return NULL;
    size_t j = hash_str(name) & (s->n_slots - 1);
    while (s->slots[j]) {
        const st_tensor *t = &s->tensors[s->slots[j] - 1];
        if (!strcmp(t->name, name)) return t;
        j = (j + 1) & (s->n_slots - 1);
    }
    return NULL;
}

size_t st_numel(const st_tensor *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

const char *st_path(const st_set *s, const st_tensor *t) { return t->file >= 0 ? s->files[t->file].path : "<synthetic>"; }

void st_add_virtual(st_set *s, const char *name, tm_dtype dtype, int ndim, const int64_t *shape)
{
    TM_ASSERT(ndim >= 0 && ndim <= ST_MAX_DIMS);
    st_tensor t = {0};
    t.name = tm_strdup(name);
    t.dtype = (int)dtype;
    snprintf(t.dtype_str, sizeof t.dtype_str, "%s", tm_dtype_name(dtype));
    t.ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)(t.shape[i] = shape[i]);
    t.nbytes = n * tm_dtype_size(dtype);
    t.file = -1;
    s->tensors = tm_realloc(s->tensors, sizeof(st_tensor) * (size_t)(s->n_tensors + 1));
    s->tensors[s->n_tensors++] = t;
}

void st_index(st_set *s) { index_build(s); }

void st_release(const st_set *s, const st_tensor *t)
{
    long page = sysconf(_SC_PAGESIZE);
    if (t->file < 0) return;
    const st_file *f = &s->files[t->file];
    uintptr_t lo = (uintptr_t)t->data, hi = lo + t->nbytes;
    uintptr_t base = (uintptr_t)f->map;
    if (lo < base || hi > base + f->size) return; /* an aligned copy, not the map */
    lo = (lo + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    hi &= ~((uintptr_t)page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

void st_advise_sparse(st_set *s)
{
    s->sparse = 1;
    for (int i = 0; i < s->n_files; i++)
        if (s->files[i].map) madvise(s->files[i].map, s->files[i].size, MADV_RANDOM);
}

void st_prefetch(const st_set *s, const st_tensor *t)
{
    long page = sysconf(_SC_PAGESIZE);
    if (!s->sparse || t->file < 0) return;
    const st_file *f = &s->files[t->file];
    uintptr_t lo = (uintptr_t)t->data, hi = lo + t->nbytes;
    uintptr_t base = (uintptr_t)f->map;
    if (lo < base || hi > base + f->size) return;
    lo &= ~((uintptr_t)page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_WILLNEED);
}

/* ---- one file ------------------------------------------------------------ */

static int64_t json_int(const cJSON *v, int *ok)
{
    int64_t i;
    if (!tm_json_int(v, 0, (int64_t)9e15, &i)) {
        *ok = 0;
        return 0;
    }
    return i;
}

static tm_status parse_tensor(st_set *s, int file_idx, const cJSON *item, tm_err *err)
{
    const st_file *f = &s->files[file_idx];
    const char *fname = f->path, *name = item->string;
    size_t data_len = f->size - f->data_start;
    if (!cJSON_IsObject(item)) return tm_errf(err, TM_EINPUT, "%s: tensor '%s': entry is not an object", fname, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt)) return tm_errf(err, TM_EINPUT, "%s: tensor '%s': missing or non-string dtype", fname, name);
    if (!cJSON_IsArray(shape)) return tm_errf(err, TM_EINPUT, "%s: tensor '%s': missing shape", fname, name);
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return tm_errf(err, TM_EINPUT, "%s: tensor '%s': data_offsets must be [begin, end]", fname, name);

    st_tensor t = {0};
    t.file = file_idx;
    snprintf(t.dtype_str, sizeof t.dtype_str, "%s", dt->valuestring);
    tm_dtype d;
    t.dtype = tm_dtype_parse(dt->valuestring, &d) == 0 ? (int)d : -1;
    t.ndim = cJSON_GetArraySize(shape);
    if (t.ndim > ST_MAX_DIMS) return tm_errf(err, TM_EINPUT, "%s: tensor '%s': %d dimensions (at most %d)", fname, name, t.ndim, ST_MAX_DIMS);
    int ok = 1;
    size_t numel = 1;
    for (int i = 0; i < t.ndim; i++) {
        t.shape[i] = json_int(cJSON_GetArrayItem(shape, i), &ok);
        numel *= (size_t)t.shape[i];
    }
    int64_t b = json_int(cJSON_GetArrayItem(offs, 0), &ok), e = json_int(cJSON_GetArrayItem(offs, 1), &ok);
    if (!ok) return tm_errf(err, TM_EINPUT, "%s: tensor '%s': shape or data_offsets hold a non-integer", fname, name);
    if (b > e || (size_t)e > data_len)
        return tm_errf(err, TM_EINPUT,
                       "%s: tensor '%s': data_offsets [%lld, %lld] out of range (data section is %zu bytes%s)", fname,
                       name, (long long)b, (long long)e, data_len, (size_t)e > data_len ? ", file truncated?" : "");
    t.nbytes = (size_t)(e - b);
    if (t.dtype >= 0 && t.nbytes != numel * tm_dtype_size((tm_dtype)t.dtype))
        return tm_errf(err, TM_EINPUT, "%s: tensor '%s': %zu bytes for %zu elements of %s", fname, name, t.nbytes,
                       numel, t.dtype_str);
    t.data = (const char *)f->map + f->data_start + b;
    if (t.dtype >= 0 && ((uintptr_t)t.data % tm_dtype_size((tm_dtype)t.dtype)) != 0) {
        void *copy = NULL;
        if (posix_memalign(&copy, 64, t.nbytes ? t.nbytes : 1)) return tm_errf(err, TM_EFAIL, "out of memory");
        memcpy(copy, t.data, t.nbytes);
        s->copies = tm_realloc(s->copies, sizeof(void *) * (size_t)(s->n_copies + 1));
        s->copies[s->n_copies++] = copy;
        t.data = copy;
    }
    if (st_find(s, name)) return tm_errf(err, TM_EINPUT, "%s: tensor '%s' appears twice", fname, name);
    t.name = tm_strdup(name);
    s->tensors = tm_realloc(s->tensors, sizeof(st_tensor) * (size_t)(s->n_tensors + 1));
    s->tensors[s->n_tensors++] = t;
    return TM_OK;
}

/* Map `path` and append its tensors.  `want` (may be NULL) lists the names an
 * index promised in this file; each must be present. */
static tm_status add_file(st_set *s, const char *path, tm_err *err)
{
    tm_status st = TM_OK;
    cJSON *hdr = NULL;
    int fd;
    size_t size;
    if ((st = tm_open_input(path, "safetensors file", TM_CAP_NONE, &fd, &size, err)) != TM_OK) return st;
    if (size == 0) {
        close(fd);
        return tm_errf(err, TM_EINPUT, "%s: empty file", path);
    }
    if (size < 8) {
        close(fd);
        return tm_errf(err, TM_EINPUT, "%s: truncated: %zu bytes, shorter than the 8-byte header length", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return tm_errf(err, TM_EFAIL, "%s: mmap failed: %s", path, strerror(errno));

    s->files = tm_realloc(s->files, sizeof(st_file) * (size_t)(s->n_files + 1));
    int idx = s->n_files++;
    st_file *f = &s->files[idx];
    f->path = tm_strdup(path);
    f->map = map;
    f->size = size;

    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)((const unsigned char *)map)[i] << (8 * i);
    if (hlen > size - 8)
        return tm_errf(err, TM_EINPUT, "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                       (unsigned long long)hlen, size);
    if (hlen > ST_MAX_HEADER)
        return tm_errf(err, TM_EINPUT, "%s: header length %llu is implausibly large", path, (unsigned long long)hlen);
    f->data_start = 8 + (size_t)hlen;
    const char *end = NULL;
    hdr = cJSON_ParseWithLengthOpts((const char *)map + 8, (size_t)hlen, &end, 0);
    if (!hdr || !cJSON_IsObject(hdr)) {
        st = tm_errf(err, TM_EINPUT, "%s: header is not a JSON object", path);
        goto out;
    }
    for (const cJSON *it = hdr->child; it; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) continue;
        if ((st = parse_tensor(s, idx, it, err)) != TM_OK) goto out;
    }
out:
    cJSON_Delete(hdr);
    return st;
}

/* ---- sets ---------------------------------------------------------------- */

tm_status st_open_file(st_set *s, const char *path, tm_err *err)
{
    memset(s, 0, sizeof *s);
    tm_status st = add_file(s, path, err);
    if (st != TM_OK) {
        st_close(s);
        return st;
    }
    index_build(s);
    return TM_OK;
}

static tm_status open_index(st_set *s, const char *dir, const char *index_path, tm_err *err)
{
    char *text = NULL;
    cJSON *root = NULL;
    tm_status st = tm_read_input(index_path, "safetensors index", TM_CAP_INDEX, &text, NULL, err);
    if (st != TM_OK) return st;
    root = cJSON_Parse(text);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!root) {
        st = tm_errf(err, TM_EINPUT, "%s: not valid JSON", index_path);
        goto out;
    }
    if (!cJSON_IsObject(wm)) {
        st = tm_errf(err, TM_EINPUT, "%s: missing \"weight_map\" object", index_path);
        goto out;
    }
    /* open each distinct shard once, in order of first mention */
    for (const cJSON *it = wm->child; it; it = it->next) {
        if (!cJSON_IsString(it)) {
            st = tm_errf(err, TM_EINPUT, "%s: weight_map['%s'] is not a file name", index_path, it->string);
            goto out;
        }
        if (strchr(it->valuestring, '/')) {
            st = tm_errf(err, TM_EINPUT, "%s: weight_map['%s']: shard '%s' is not a plain file name", index_path,
                         it->string, it->valuestring);
            goto out;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, it->valuestring);
        int seen = 0;
        for (int i = 0; i < s->n_files && !seen; i++) seen = !strcmp(s->files[i].path, path);
        if (!seen && (st = add_file(s, path, err)) != TM_OK) goto out;
        if (!seen) index_build(s);
    }
    for (const cJSON *it = wm->child; it; it = it->next) {
        const st_tensor *t = st_find(s, it->string);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, it->valuestring);
        if (!t || strcmp(st_path(s, t), path)) {
            st = tm_errf(err, TM_EINPUT, "%s: tensor '%s' is listed in the index but missing from %s", index_path,
                         it->string, it->valuestring);
            goto out;
        }
    }
out:
    cJSON_Delete(root);
    free(text);
    return st;
}

tm_status st_open_dir(st_set *s, const char *dir, tm_err *err)
{
    memset(s, 0, sizeof *s);
    char path[4096];
    tm_status st;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK) == 0) {
        st = open_index(s, dir, path, err);
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (access(path, F_OK) != 0)
            return tm_errf(err, TM_EINPUT, "%s: no model.safetensors or model.safetensors.index.json", dir);
        st = add_file(s, path, err);
    }
    if (st != TM_OK) {
        st_close(s);
        return st;
    }
    index_build(s);
    return TM_OK;
}

void st_close(st_set *s)
{
    for (int i = 0; i < s->n_files; i++) {
        munmap(s->files[i].map, s->files[i].size);
        free(s->files[i].path);
    }
    for (int i = 0; i < s->n_tensors; i++) free(s->tensors[i].name);
    for (int i = 0; i < s->n_copies; i++) free(s->copies[i]);
    free(s->files);
    free(s->tensors);
    free(s->slots);
    free(s->copies);
    memset(s, 0, sizeof *s);
}
