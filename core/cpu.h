/* cpu.h: run-time CPU feature detection and a description of the machine.
 *
 * trustmoe is built for x86-64-v3 (AVX2, FMA) and picks wider kernels at run
 * time, so one binary runs on any x86-64-v3 machine and uses AVX-512,
 * AVX512-BF16 or AMX where the CPU (and the OS, for the zmm and tile state)
 * has them.
 */
#ifndef TM_CPU_H
#define TM_CPU_H

typedef struct {
    int avx2, fma;             /* the x86-64-v3 baseline                   */
    int avx512f, avx512bw, avx512vl;
    int avx512dq;              /* vpmullq: 64-bit products per lane        */
    int avx512bf16;            /* vdpbf16ps / vcvtne2ps2bf16               */
    int amx;                   /* AMX-TILE and AMX-BF16, the OS saving tile
                                  state and granting this process its use  */
    int amd;                   /* vendor AuthenticAMD (or HygonGenuine)    */
    int n_cpus;                /* online logical CPUs                      */
    char model[128];           /* brand string, e.g. "AMD EPYC 9654"       */
} cpu_info;

/* Detected once, then cached; safe to call from any thread after the first
 * call has returned. */
const cpu_info *cpu_get(void);

/* One line: model, CPU count and the vector extensions in use. */
void cpu_describe(char *buf, int len);

#endif
