/*
 * tbcount: a QEMU (7.2, linux-user) TCG plugin that counts, per translation block (TB), how often
 * each guest thread (vCPU) executed it, and records the TB's instructions (raw bytes) and the
 * main binary's symbol of its first and last instruction. Written at exit to the file given as
 * `out=PATH`.
 *
 * It also splits every thread's counts by *task kind*: context 0 is "outside pool tasks"; a task
 * starts when an indirect call made outside a task lands on a function whose symbol contains every
 * part of `task=PART+PART` (default `6engine6native+closure`: vitedge's pool tasks are closures of
 * `engine::native` — a linear layer's row block, attention packing, attention rows — called through
 * `&dyn Fn` by `engine::pool` on every thread), and ends when that function returns (the plugin
 * keeps a call depth per thread; calls and returns end TBs on aarch64 and x86-64). The task's kind
 * is its entry address, numbered 1.. in order of first use.
 *
 * Counting: one cheap callback per TB execution (no per-instruction instrumentation). Each thread
 * increments only its own counter slot, so no atomics are needed.
 *
 * Output (text, tab separated, one record per line):
 *   tbcount 2 <target> <vcpus> <contexts>
 *   map <start> <end> <offset> <path>        file-backed mappings of the qemu process at exit (the
 *                                            guest's own addresses when guest_base is 0)
 *   ctx <index> <entry vaddr> <entry sym|-> <task calls per vCPU, comma separated>
 *   tb <vaddr> <ninsn> <hex bytes per insn, comma separated> <first sym|-> <last sym|->
 *      <per vCPU (';' separated): counts per context (',' separated)>
 * Duplicate TBs (retranslations of the same code) are merged by (vaddr, bytes).
 *
 * Build: gcc -O2 -shared -fPIC -I<qemu>/include/qemu $(pkg-config --cflags --libs glib-2.0)
 * Use:   qemu-aarch64 -plugin ./libtbcount.so,out=counts.tsv[,task=SUBSTR] prog args
 */
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu-plugin.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MAX_VCPUS 8   /* guest threads counted apart; later ones share the last slot */
#define MAX_CTX 8     /* task kinds (distinct task entry points) + 1 for "outside tasks" */

enum term { TERM_OTHER, TERM_CALL, TERM_ICALL, TERM_RET };

struct tb_rec {
    uint64_t vaddr;
    uint32_t ninsn;
    uint32_t nbytes;
    uint8_t *bytes;      /* all instruction bytes, back to back */
    uint8_t *lens;       /* per instruction */
    const char *sym0;    /* symbol of the first / last instruction (qemu owns the strings) */
    const char *sym1;
    enum term term;
    int task_entry;      /* the first instruction's symbol is a task closure (see `task=`) */
    uint64_t count[MAX_VCPUS][MAX_CTX];
};

struct vcpu_state {
    int in_task;         /* task kind (context index) while inside a task, else 0 */
    int after_icall;     /* the previous TB ended in an indirect call made outside any task */
    int64_t depth;
    uint64_t task_calls[MAX_CTX];
    char pad[40];
};

/* Task kinds: the guest address of the first TB of a task (the closure's entry). */
static uint64_t ctx_entry[MAX_CTX];
static const char *ctx_sym[MAX_CTX];
static unsigned n_ctx = 1;

static const char *out_path;
/* A task is an indirect call to a function whose symbol contains every `+`-separated part. */
static char **task_parts;
static int is_x86;
static GMutex lock;
static GPtrArray *records;
static struct vcpu_state vstate[MAX_VCPUS];
static unsigned max_vcpu_seen;
static int vcpu_overflow;

/* What the TB's last instruction does to the call stack. */
static enum term classify_last(const uint8_t *b, size_t len)
{
    if (!is_x86) {
        if (len != 4) {
            return TERM_OTHER;
        }
        uint32_t w = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        if ((w & 0xFC000000u) == 0x94000000u) {                 /* BL imm26 */
            return TERM_CALL;
        }
        if ((w & 0xFFFFFC1Fu) == 0xD63F0000u ||                 /* BLR Xn */
            (w & 0xFEFFF800u) == 0xD63F0800u) {                 /* BLRAA/BLRAB/BLRAAZ/BLRABZ */
            return TERM_ICALL;
        }
        if ((w & 0xFFFFFC1Fu) == 0xD65F0000u ||                 /* RET Xn */
            w == 0xD65F0BFFu || w == 0xD65F0FFFu) {             /* RETAA / RETAB */
            return TERM_RET;
        }
        return TERM_OTHER;
    }
    size_t i = 0;
    while (i < len && (b[i] == 0x66 || b[i] == 0x67 || b[i] == 0xF2 || b[i] == 0xF3 || b[i] == 0x2E ||
                       b[i] == 0x3E || b[i] == 0x26 || b[i] == 0x36 || b[i] == 0x64 || b[i] == 0x65 ||
                       b[i] == 0xF0 || (b[i] >= 0x40 && b[i] <= 0x4F))) {
        i++;
    }
    if (i >= len) {
        return TERM_OTHER;
    }
    if (b[i] == 0xE8) {
        return TERM_CALL;
    }
    if (b[i] == 0xFF && i + 1 < len && ((b[i + 1] >> 3) & 7) == 2) {
        return TERM_ICALL;
    }
    if (b[i] == 0xC3 || b[i] == 0xC2) {
        return TERM_RET;
    }
    return TERM_OTHER;
}

static void tb_exec(unsigned int vcpu, void *udata)
{
    struct tb_rec *r = udata;
    if (vcpu >= MAX_VCPUS) {
        vcpu_overflow = 1;
        vcpu = MAX_VCPUS - 1;
    }
    struct vcpu_state *s = &vstate[vcpu];
    if (s->after_icall) {
        s->after_icall = 0;
        if (r->task_entry) {
            unsigned c = 1;
            while (c < n_ctx && ctx_entry[c] != r->vaddr) {
                c++;
            }
            if (c == n_ctx) {
                g_mutex_lock(&lock);
                while (c < n_ctx && ctx_entry[c] != r->vaddr) {
                    c++;
                }
                if (c == n_ctx && n_ctx < MAX_CTX) {
                    ctx_entry[c] = r->vaddr;
                    ctx_sym[c] = r->sym0;
                    n_ctx++;
                } else if (c == n_ctx) {
                    c = MAX_CTX - 1;  /* too many kinds: the last one merges the rest */
                }
                g_mutex_unlock(&lock);
            }
            s->in_task = c;
            s->depth = 0;
            s->task_calls[c]++;
        }
    }
    r->count[vcpu][s->in_task]++;
    switch (r->term) {
    case TERM_ICALL:
        if (s->in_task) {
            s->depth++;
        } else {
            s->after_icall = 1;
        }
        break;
    case TERM_CALL:
        if (s->in_task) {
            s->depth++;
        }
        break;
    case TERM_RET:
        if (s->in_task) {
            if (s->depth == 0) {
                s->in_task = 0;
            } else {
                s->depth--;
            }
        }
        break;
    default:
        break;
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (n == 0) {
        return;
    }
    struct tb_rec *r = g_new0(struct tb_rec, 1);
    r->vaddr = qemu_plugin_tb_vaddr(tb);
    r->ninsn = n;
    r->lens = g_new(uint8_t, n);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        r->lens[i] = qemu_plugin_insn_size(insn);
        total += r->lens[i];
    }
    r->nbytes = total;
    r->bytes = g_new(uint8_t, total);
    size_t off = 0;
    const uint8_t *last = NULL;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        memcpy(r->bytes + off, qemu_plugin_insn_data(insn), r->lens[i]);
        last = r->bytes + off;
        off += r->lens[i];
        if (i == 0) {
            r->sym0 = qemu_plugin_insn_symbol(insn);
        }
        if (i == n - 1) {
            r->sym1 = qemu_plugin_insn_symbol(insn);
        }
    }
    r->term = classify_last(last, r->lens[n - 1]);
    r->task_entry = r->sym0 != NULL;
    for (char **p = task_parts; r->task_entry && *p; p++) {
        r->task_entry = strstr(r->sym0, *p) != NULL;
    }
    g_mutex_lock(&lock);
    g_ptr_array_add(records, r);
    g_mutex_unlock(&lock);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, r);
}

static void vcpu_init(qemu_plugin_id_t id, unsigned int vcpu)
{
    g_mutex_lock(&lock);
    if (vcpu + 1 > max_vcpu_seen) {
        max_vcpu_seen = vcpu + 1;
    }
    g_mutex_unlock(&lock);
}

static char *record_key(const struct tb_rec *r)
{
    GString *k = g_string_new(NULL);
    g_string_append_printf(k, "%" PRIx64 ":", r->vaddr);
    for (uint32_t i = 0; i < r->nbytes; i++) {
        g_string_append_printf(k, "%02x", r->bytes[i]);
    }
    return g_string_free(k, FALSE);
}

static void write_maps(FILE *f)
{
    FILE *m = fopen("/proc/self/maps", "r");
    char line[4096];
    if (!m) {
        return;
    }
    while (fgets(line, sizeof line, m)) {
        unsigned long long start, end, offset;
        char perms[8], dev[16], path[3072];
        unsigned long inode;
        path[0] = 0;
        if (sscanf(line, "%llx-%llx %7s %llx %15s %lu %3071[^\n]", &start, &end, perms, &offset, dev, &inode, path) >= 6 &&
            path[0] == '/') {
            fprintf(f, "map\t%llx\t%llx\t%llx\t%s\n", start, end, offset, path);
        }
    }
    fclose(m);
}

static void plugin_exit(qemu_plugin_id_t id, void *p)
{
    unsigned nv = max_vcpu_seen < 1 ? 1 : (max_vcpu_seen > MAX_VCPUS ? MAX_VCPUS : max_vcpu_seen);
    GHashTable *merged = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    GPtrArray *order = g_ptr_array_new();
    for (guint i = 0; i < records->len; i++) {
        struct tb_rec *r = g_ptr_array_index(records, i);
        char *key = record_key(r);
        struct tb_rec *first = g_hash_table_lookup(merged, key);
        if (first) {
            for (unsigned v = 0; v < MAX_VCPUS; v++) {
                for (unsigned c = 0; c < MAX_CTX; c++) {
                    first->count[v][c] += r->count[v][c];
                }
            }
            g_free(key);
        } else {
            g_hash_table_insert(merged, key, r);
            g_ptr_array_add(order, r);
        }
    }
    FILE *f = fopen(out_path, "w");
    if (!f) {
        fprintf(stderr, "tbcount: cannot write %s\n", out_path);
        return;
    }
    fprintf(f, "tbcount\t2\t%s\t%u\t%u\n", is_x86 ? "x86_64" : "aarch64", nv, n_ctx);
    write_maps(f);
    for (unsigned c = 1; c < n_ctx; c++) {
        fprintf(f, "ctx\t%u\t%" PRIx64 "\t%s\t", c, ctx_entry[c], ctx_sym[c] ? ctx_sym[c] : "-");
        for (unsigned v = 0; v < nv; v++) {
            fprintf(f, "%s%" PRIu64, v ? "," : "", vstate[v].task_calls[c]);
        }
        fputc('\n', f);
    }
    if (vcpu_overflow) {
        fprintf(f, "warning\tmore than %d vCPUs: the last slot merges the rest\n", MAX_VCPUS);
    }
    for (guint i = 0; i < order->len; i++) {
        struct tb_rec *r = g_ptr_array_index(order, i);
        uint64_t any = 0;
        for (unsigned v = 0; v < MAX_VCPUS; v++) {
            for (unsigned c = 0; c < MAX_CTX; c++) {
                any |= r->count[v][c];
            }
        }
        if (!any) {
            continue;
        }
        fprintf(f, "tb\t%" PRIx64 "\t%u\t", r->vaddr, r->ninsn);
        uint32_t off = 0;
        for (uint32_t k = 0; k < r->ninsn; k++) {
            if (k) {
                fputc(',', f);
            }
            for (uint32_t b = 0; b < r->lens[k]; b++) {
                fprintf(f, "%02x", r->bytes[off + b]);
            }
            off += r->lens[k];
        }
        fprintf(f, "\t%s\t%s\t", r->sym0 ? r->sym0 : "-", r->sym1 ? r->sym1 : "-");
        for (unsigned v = 0; v < nv; v++) {
            fputs(v ? ";" : "", f);
            for (unsigned c = 0; c < n_ctx; c++) {
                fprintf(f, "%s%" PRIu64, c ? "," : "", r->count[v][c]);
            }
        }
        fputc('\n', f);
    }
    fclose(f);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (g_str_has_prefix(argv[i], "out=")) {
            out_path = argv[i] + 4;
        } else if (g_str_has_prefix(argv[i], "task=")) {
            task_parts = g_strsplit(argv[i] + 5, "+", -1);
        } else {
            fprintf(stderr, "tbcount: unknown argument %s (expected out=PATH, task=PART[+PART...])\n", argv[i]);
            return -1;
        }
    }
    if (!out_path) {
        fprintf(stderr, "tbcount: missing out=PATH\n");
        return -1;
    }
    if (!task_parts) {
        task_parts = g_strsplit("6engine6native+closure", "+", -1);
    }
    is_x86 = strcmp(info->target_name, "x86_64") == 0 || strcmp(info->target_name, "i386") == 0;
    records = g_ptr_array_new();
    g_mutex_init(&lock);
    qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
