/*
 * vitedge_stream: classify raw camera frames read from stdin with the vitedge C API and print one
 * JSON line per frame, like `vitedge stream --output json` ({"frame", "top": [{"index", "label",
 * "score"}], "ms"}).
 *
 *   gcc -O2 -Icapi/include examples/vitedge_stream.c -Ltarget/release -lvitedge -o vitedge_stream
 *   ffmpeg -i video.mp4 -f rawvideo -pix_fmt nv12 -s 640x480 - | \
 *       LD_LIBRARY_PATH=target/release ./vitedge_stream model.vitb nv12 640x480 [top] [threads]
 *
 * Pixel formats: rgb24 bgr24 yuyv uyvy nv12 i420 (BT.601 limited range, as `vitedge stream`'s
 * defaults). Exit status 0 at end of input, 1 on an error (after the lines already printed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vitedge.h"

static const char *const FORMATS[] = {"rgb24", "bgr24", "yuyv", "uyvy", "nv12", "i420"};

static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c == '\n') {
            fputs("\\n", stdout);
        } else if (c == '\r') {
            fputs("\\r", stdout);
        } else if (c == '\t') {
            fputs("\\t", stdout);
        } else if (c < 0x20) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
    }
    putchar('"');
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.vitb PIXEL_FORMAT WIDTHxHEIGHT [TOP] [THREADS] < frames\n", argv[0]);
        return 2;
    }
    uint32_t format = 0;
    while (format < sizeof FORMATS / sizeof *FORMATS && strcmp(FORMATS[format], argv[2]) != 0) format++;
    unsigned width = 0, height = 0;
    size_t frame_len = 0;
    if (format < sizeof FORMATS / sizeof *FORMATS && sscanf(argv[3], "%ux%u", &width, &height) == 2) {
        frame_len = vitedge_frame_size(format, width, height);
    }
    if (frame_len == 0) {
        fprintf(stderr, "error: `%s %s` is not a pixel format (rgb24 bgr24 yuyv uyvy nv12 i420) and a size WIDTHxHEIGHT\n", argv[2], argv[3]);
        return 2;
    }
    size_t k = argc > 4 ? (size_t)strtoul(argv[4], NULL, 10) : 5;
    VitedgeOptions options = vitedge_default_options();
    options.threads = argc > 5 ? (uint32_t)strtoul(argv[5], NULL, 10) : 0;

    VitedgeModel *model = NULL;
    if (vitedge_open(argv[1], &options, &model) != VITEDGE_STATUS_OK) {
        fprintf(stderr, "error: %s\n", vitedge_last_error());
        return 1;
    }
    if (k == 0) k = 1;
    VitedgePrediction *top = calloc(k, sizeof *top);
    unsigned char *buf = malloc(frame_len);
    if (!top || !buf) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    VitedgeFrame frame = {.data = buf, .len = frame_len, .width = width, .height = height, .stride = 0,
                          .pixel_format = format, .color_matrix = VITEDGE_COLOR_MATRIX_BT601,
                          .color_range = VITEDGE_COLOR_RANGE_LIMITED};
    int status = 0;
    for (unsigned long n = 0;; n++) {
        size_t got = fread(buf, 1, frame_len, stdin);
        if (got < frame_len) {
            if (got > 0) fprintf(stderr, "warning: skipped a short last frame (%zu of %zu bytes)\n", got, frame_len);
            break;
        }
        double t0 = now_ms();
        size_t count = 0;
        VitedgeStatus s = vitedge_classify_frame(model, &frame, top, k, &count);
        double ms = now_ms() - t0;
        if (s != VITEDGE_STATUS_OK) {
            fprintf(stderr, "error: frame %lu: %s: %s\n", n, vitedge_status_name((uint32_t)s), vitedge_last_error());
            status = 1;
            break;
        }
        printf("{\"frame\":%lu,\"top\":[", n);
        for (size_t i = 0; i < count; i++) {
            printf("%s{\"index\":%u,\"label\":", i ? "," : "", top[i].index);
            json_string(top[i].label);
            printf(",\"score\":%.9g}", top[i].score);
        }
        printf("],\"ms\":%.3f}\n", ms);
        fflush(stdout);
    }
    free(buf);
    free(top);
    vitedge_close(model);
    return status;
}
