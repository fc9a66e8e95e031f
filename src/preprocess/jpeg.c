/*
 * JPEG decoding for vitedge through libjpeg(-turbo)'s API as provided by mozjpeg-sys, with the
 * settings Pillow uses (islow IDCT, fancy upsampling: libjpeg's defaults) and Pillow's colour
 * handling (`Image.open(f).convert("RGB")`): grayscale replicated to RGB; 4-component files decoded
 * to CMYK, inverted (Pillow's "CMYK;I" raw mode) and converted with Pillow's cmyk2rgb.
 *
 * libjpeg reports fatal errors through error_exit, which must not return: it longjmps back here,
 * so no Rust frame is ever crossed by the jump. A premature end of data (libjpeg's JWRN_JPEG_EOF
 * warning, after which it would fill the rest with grey) is an error, as it is in Pillow, which
 * raises "image file is truncated". Other corrupt-data warnings are recorded and decoding goes on,
 * as in Pillow.
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "jpeglib.h"
#include "jerror.h"

/* Length of the message buffers the caller passes (libjpeg's JMSG_LENGTH_MAX). */
#define VITEDGE_JPEG_MSG 200

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char *message;
    char *warning;
} vitedge_error;

static void vitedge_error_exit(j_common_ptr cinfo) {
    vitedge_error *err = (vitedge_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void vitedge_emit_message(j_common_ptr cinfo, int level) {
    vitedge_error *err = (vitedge_error *)cinfo->err;
    if (level >= 0) {
        return; /* trace messages */
    }
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
        (*cinfo->err->format_message)(cinfo, err->message);
        longjmp(err->jump, 1);
    }
    if (cinfo->err->num_warnings++ == 0 && err->warning) {
        (*cinfo->err->format_message)(cinfo, err->warning);
    }
}

static void vitedge_output_message(j_common_ptr cinfo) { (void)cinfo; }

static void setup_errors(struct jpeg_decompress_struct *cinfo, vitedge_error *err, char *message, char *warning) {
    cinfo->err = jpeg_std_error(&err->pub);
    err->pub.error_exit = vitedge_error_exit;
    err->pub.emit_message = vitedge_emit_message;
    err->pub.output_message = vitedge_output_message;
    err->message = message;
    err->warning = warning;
    message[0] = 0;
    if (warning) {
        warning[0] = 0;
    }
}

/*
 * Reads the header of the JPEG in data[0..len): image width, height and component count.
 * Returns 0, or -1 with a NUL-terminated reason in message (VITEDGE_JPEG_MSG bytes).
 */
int vitedge_jpeg_header(const unsigned char *data, unsigned long len, unsigned int *width, unsigned int *height,
                        int *components, char *message) {
    struct jpeg_decompress_struct cinfo;
    vitedge_error err;
    setup_errors(&cinfo, &err, message, NULL);
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, len);
    jpeg_read_header(&cinfo, TRUE);
    *width = cinfo.image_width;
    *height = cinfo.image_height;
    *components = cinfo.num_components;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

/* Pillow's MULDIV255 (Convert.c). */
static unsigned int muldiv255(unsigned int a, unsigned int b) {
    unsigned int tmp = a * b + 128;
    return ((tmp >> 8) + tmp) >> 8;
}

/* Pillow's "CMYK;I" unpacking (255 - v) followed by its cmyk2rgb conversion. */
static void inverted_cmyk_to_rgb(const unsigned char *in, unsigned char *out, unsigned int width) {
    for (unsigned int x = 0; x < width; x++) {
        unsigned int c = 255 - in[0], m = 255 - in[1], y = 255 - in[2], k = 255 - in[3];
        unsigned int nk = 255 - k;
        int r = (int)nk - (int)muldiv255(c, nk);
        int g = (int)nk - (int)muldiv255(m, nk);
        int b = (int)nk - (int)muldiv255(y, nk);
        out[0] = (unsigned char)(r < 0 ? 0 : r);
        out[1] = (unsigned char)(g < 0 ? 0 : g);
        out[2] = (unsigned char)(b < 0 ? 0 : b);
        in += 4;
        out += 3;
    }
}

/*
 * Decodes the JPEG in data[0..len) to interleaved RGB8 in out (out_len must be width * height * 3
 * for the header's size). max_memory bounds libjpeg's own working memory (coefficient buffers of
 * progressive files, row buffers); 0 means no bound. Returns 0, or -1 with a reason in message.
 * The first corrupt-data warning, if any, is left in warning (empty otherwise).
 */
int vitedge_jpeg_decode_rgb8(const unsigned char *data, unsigned long len, unsigned long max_memory, unsigned char *out,
                             size_t out_len, char *message, char *warning) {
    struct jpeg_decompress_struct cinfo;
    vitedge_error err;
    setup_errors(&cinfo, &err, message, warning);
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    if (max_memory) {
        cinfo.mem->max_memory_to_use = (long)max_memory;
    }
    jpeg_mem_src(&cinfo, data, len);
    jpeg_read_header(&cinfo, TRUE);
    int components = cinfo.num_components;
    if (components == 1) {
        cinfo.out_color_space = JCS_GRAYSCALE;
    } else if (components == 3) {
        cinfo.out_color_space = JCS_RGB;
    } else if (components == 4) {
        cinfo.out_color_space = JCS_CMYK;
    } else {
        snprintf(message, VITEDGE_JPEG_MSG, "cannot handle %d-component JPEG images (Pillow reads 1, 3 or 4)", components);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    size_t width = cinfo.image_width, height = cinfo.image_height;
    if (width == 0 || height == 0 || out_len / 3 / width != height || out_len % (3 * width) != 0) {
        snprintf(message, VITEDGE_JPEG_MSG, "output buffer of %zu bytes does not fit %zux%zu RGB", out_len, width, height);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_start_decompress(&cinfo);
    if (cinfo.output_width != width || cinfo.output_height != height) {
        snprintf(message, VITEDGE_JPEG_MSG, "decoder output %ux%u differs from the header's %zux%zu", cinfo.output_width,
                 cinfo.output_height, width, height);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    /* Row buffer for the grey and CMYK conversions, from libjpeg's pool (freed on every path). */
    JSAMPARRAY row = NULL;
    if (components != 3) {
        row = (*cinfo.mem->alloc_sarray)((j_common_ptr)&cinfo, JPOOL_IMAGE, (JDIMENSION)(width * components), 1);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        unsigned char *dst = out + (size_t)cinfo.output_scanline * width * 3;
        if (components == 3) {
            JSAMPROW rows[1] = {dst};
            jpeg_read_scanlines(&cinfo, rows, 1);
        } else {
            jpeg_read_scanlines(&cinfo, row, 1);
            const unsigned char *src = row[0];
            if (components == 1) {
                for (size_t x = 0; x < width; x++) {
                    dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = src[x];
                }
            } else {
                inverted_cmyk_to_rgb(src, dst, (unsigned int)width);
            }
        }
    }
    /* Like Pillow, no jpeg_finish_decompress: once every row is out, what follows (EOI) is not needed. */
    jpeg_destroy_decompress(&cinfo);
    return 0;
}
