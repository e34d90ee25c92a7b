/* cpu.c: CPU feature detection with cpuid and the compiler's cpu model. */
#include "cpu.h"

#include <cpuid.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static cpu_info info;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* XCR0 bits 5..7 (opmask, zmm0-15 upper halves, zmm16-31) must all be set by
 * the OS before any AVX-512 instruction may run. */
static int os_saves_zmm(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0xe6) == 0xe6;
}

/* AMX: CPUID leaf 7 EDX bits 24 (AMX-TILE) and 22 (AMX-BF16), XCR0 bits 17
 * and 18 (tile configuration and data saved by the OS), then Linux's
 * per-process permission for the 8 KiB of tile data (ARCH_REQ_XCOMP_PERM,
 * feature 18), without which the first tile instruction faults. */
static int amx_usable(void)
{
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (!((d >> 24) & 1) || !((d >> 22) & 1)) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return 0;
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

static void detect(void)
{
    __builtin_cpu_init();
    info.avx2 = __builtin_cpu_supports("avx2");
    info.fma = __builtin_cpu_supports("fma");
    int zmm = os_saves_zmm();
    info.avx512f = zmm && __builtin_cpu_supports("avx512f");
    info.avx512bw = zmm && __builtin_cpu_supports("avx512bw");
    info.avx512vl = zmm && __builtin_cpu_supports("avx512vl");
    info.avx512dq = zmm && __builtin_cpu_supports("avx512dq");
    /* AVX512_BF16 is leaf 7, sub-leaf 1, EAX bit 5; older compilers do not
     * know the name in __builtin_cpu_supports, so ask cpuid directly. */
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (info.avx512f && __get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 1, a, b, c, d);
        info.avx512bf16 = (a >> 5) & 1;
    }
    info.amx = info.avx512bf16 && amx_usable();
    unsigned vendor[4] = {0};
    __get_cpuid(0, &a, &vendor[0], &vendor[2], &vendor[1]); /* EBX, EDX, ECX spell the vendor */
    info.amd = !memcmp(vendor, "AuthenticAMD", 12) || !memcmp(vendor, "HygonGenuine", 12);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    info.n_cpus = n > 0 ? (int)n : 1;

    /* Brand string: extended leaves 0x80000002..4, 16 bytes each. */
    unsigned regs[12] = {0};
    if (__get_cpuid_max(0x80000000, NULL) >= 0x80000004) {
        for (unsigned i = 0; i < 3; i++)
            __get_cpuid(0x80000002 + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2], &regs[4 * i + 3]);
        char raw[49];
        memcpy(raw, regs, 48);
        raw[48] = 0;
        const char *s = raw;
        while (*s == ' ') s++;
        snprintf(info.model, sizeof info.model, "%s", s);
        size_t l = strlen(info.model);
        while (l && info.model[l - 1] == ' ') info.model[--l] = 0;
    } else {
        snprintf(info.model, sizeof info.model, "unknown x86-64");
    }
}

const cpu_info *cpu_get(void)
{
    pthread_once(&once, detect);
    return &info;
}

void cpu_describe(char *buf, int len)
{
    const cpu_info *ci = cpu_get();
    snprintf(buf, (size_t)len, "%s, %d CPUs, %s%s%s%s%s", ci->model, ci->n_cpus,
             ci->avx2 && ci->fma ? "avx2+fma" : "no-avx2", ci->avx512f ? " avx512f" : "",
             ci->avx512bw && ci->avx512vl ? " avx512bw/vl" : "", ci->avx512bf16 ? " avx512bf16" : "",
             ci->amx ? " amx-bf16" : "");
}
