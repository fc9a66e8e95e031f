/* LD_PRELOAD shim for aarch64 guests under qemu-user 7.2: serves a /proc/cpuinfo that describes the
 * CPU qemu emulates instead of the host's x86 one, and (for kernels.py) can dump the guest's memory
 * map at exit.
 *
 * Why: qemu-user 7.2 passes the host's /proc/cpuinfo through. pytorch/cpuinfo (inside ONNX Runtime,
 * XNNPACK, ExecuTorch, LiteRT) parses it on aarch64 Linux for the processor list and each core's MIDR
 * (CPU implementer / part / variant / revision); on x86 text it finds no ARM processor and ONNX
 * Runtime 1.32 then dereferences a NULL core and crashes while loading. XNNPACK also picks some
 * microkernels by the core's microarchitecture (MIDR). The ISA features themselves come from
 * getauxval(AT_HWCAP/AT_HWCAP2), which qemu sets from `-cpu`.
 *
 * What: every open/openat/fopen of "/proc/cpuinfo" gets a memfd with Linux's arm64 format, one
 * "processor" block per configured CPU, the Features line decoded from AT_HWCAP/AT_HWCAP2 (names
 * and bit order of arch/arm64/kernel/cpuinfo.c) and the MIDR fields read with `mrs midr_el1`,
 * which qemu-user emulates for the chosen -cpu (cortex-a72: 0x410fd083, cortex-a76: 0x414fd0b1).
 * Everything else passes through to libc.
 *
 * With GUEST_SHIM_MAPS=FILE in the guest's environment, a destructor copies /proc/self/maps (which
 * qemu-user emulates: the guest's mappings) to FILE at exit, so that translation-block addresses
 * can be attributed to the shared objects a program dlopen()ed.
 *
 * Build: aarch64-linux-gnu-gcc -O2 -shared -fPIC -o guest-shim.so guest-shim.c -ldl
 * Use:   qemu-aarch64 -cpu cortex-a76 -E LD_PRELOAD=/abs/guest-shim.so ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

static const char *const hwcap_names[32] = {
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp",
    "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512",
    "sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg"};
static const char *const hwcap2_names[] = {
    "dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2", "frint",
    "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16", "dgh", "rng", "bti", "mte", "ecv",
    "afp", "rpres", "mte3", "sme", "smei16i64", "smef64f64", "smei8i32", "smef16f32", "smeb16f32",
    "smef32f32", "smefa64", "wfxt", "ebf16", "sveebf16"};

static int is_cpuinfo(const char *path) { return path && strcmp(path, "/proc/cpuinfo") == 0; }

/* A memfd holding the synthesized text, positioned at 0; -1 if memfd_create fails. */
static int cpuinfo_fd(int flags) {
    int fd = memfd_create("cpuinfo", (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
    if (fd < 0) return -1;
    unsigned long midr;
    __asm__ volatile("mrs %0, midr_el1" : "=r"(midr));
    unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
    char features[1024] = "";
    size_t len = 0;
    for (int b = 0; b < 32; b++)
        if (hwcap & (1UL << b)) len += snprintf(features + len, sizeof features - len, "%s%s", len ? " " : "", hwcap_names[b]);
    for (unsigned b = 0; b < sizeof hwcap2_names / sizeof *hwcap2_names; b++)
        if (hwcap2 & (1UL << b)) len += snprintf(features + len, sizeof features - len, "%s%s", len ? " " : "", hwcap2_names[b]);
    long cpus = sysconf(_SC_NPROCESSORS_CONF);
    if (cpus < 1) cpus = 1;
    FILE *f = fdopen(dup(fd), "w");
    if (!f) { close(fd); return -1; }
    for (long c = 0; c < cpus; c++)
        fprintf(f,
                "processor\t: %ld\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x%02lx\n"
                "CPU architecture: 8\nCPU variant\t: 0x%lx\nCPU part\t: 0x%03lx\nCPU revision\t: %lu\n\n",
                c, features, (midr >> 24) & 0xff, (midr >> 20) & 0xf, (midr >> 4) & 0xfff, midr & 0xf);
    fclose(f);
    lseek(fd, 0, SEEK_SET);
    return fd;
}

#define REAL(name, type) static type real_##name; if (!real_##name) real_##name = (type)dlsym(RTLD_NEXT, #name)

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);
typedef int (*openat2_fn)(int, const char *, int);
typedef FILE *(*fopen_fn)(const char *, const char *);

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & O_CREAT) || (flags & __O_TMPFILE) == __O_TMPFILE ? va_arg(ap, mode_t) : 0;
}

int open(const char *path, int flags, ...) {
    if (is_cpuinfo(path)) return cpuinfo_fd(flags);
    va_list ap; va_start(ap, flags); mode_t mode = mode_arg(flags, ap); va_end(ap);
    REAL(open, open_fn);
    return real_open(path, flags, mode);
}
int open64(const char *path, int flags, ...) {
    if (is_cpuinfo(path)) return cpuinfo_fd(flags);
    va_list ap; va_start(ap, flags); mode_t mode = mode_arg(flags, ap); va_end(ap);
    REAL(open64, open_fn);
    return real_open64(path, flags, mode);
}
int openat(int dirfd, const char *path, int flags, ...) {
    if (is_cpuinfo(path)) return cpuinfo_fd(flags);
    va_list ap; va_start(ap, flags); mode_t mode = mode_arg(flags, ap); va_end(ap);
    REAL(openat, openat_fn);
    return real_openat(dirfd, path, flags, mode);
}
int openat64(int dirfd, const char *path, int flags, ...) {
    if (is_cpuinfo(path)) return cpuinfo_fd(flags);
    va_list ap; va_start(ap, flags); mode_t mode = mode_arg(flags, ap); va_end(ap);
    REAL(openat64, openat_fn);
    return real_openat64(dirfd, path, flags, mode);
}
/* _FORTIFY_SOURCE variants. */
int __open_2(const char *path, int flags) {
    if (is_cpuinfo(path)) return cpuinfo_fd(flags);
    REAL(__open_2, open2_fn);
    return real___open_2(path, flags);
}
int __open64_2(const char *path, int flags) {
    if (is_cpuinfo(path)) return cpuinfo_fd(flags);
    REAL(__open64_2, open2_fn);
    return real___open64_2(path, flags);
}
int __openat_2(int dirfd, const char *path, int flags) {
    if (is_cpuinfo(path)) return cpuinfo_fd(flags);
    REAL(__openat_2, openat2_fn);
    return real___openat_2(dirfd, path, flags);
}
FILE *fopen(const char *path, const char *mode) {
    if (is_cpuinfo(path)) {
        int fd = cpuinfo_fd(strchr(mode, 'e') ? O_CLOEXEC : 0);
        return fd < 0 ? NULL : fdopen(fd, "r");
    }
    REAL(fopen, fopen_fn);
    return real_fopen(path, mode);
}
FILE *fopen64(const char *path, const char *mode) {
    if (is_cpuinfo(path)) return fopen(path, mode);
    REAL(fopen64, fopen_fn);
    return real_fopen64(path, mode);
}

__attribute__((destructor)) static void dump_maps(void) {
    const char *out = getenv("GUEST_SHIM_MAPS");
    if (!out || !*out) return;
    REAL(fopen, fopen_fn);
    FILE *in = real_fopen("/proc/self/maps", "r"), *o = real_fopen(out, "w");
    char buf[4096];
    size_t n;
    if (in && o)
        while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, o);
    if (in) fclose(in);
    if (o) fclose(o);
}
